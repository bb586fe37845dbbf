"""The scoring service under abuse and load: bad requests get a 4xx and the server keeps serving; slow and huge
bodies on a real uvicorn server (127.0.0.1, a free port, a background thread); a short soak (the full one is
``benchmarks/serve_soak.py``). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhan.serve import ScoringService, create_app, load_scorer
from runs import make_run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

GOOD = {"history": ["item3", "item7"], "candidates": ["item5", "item9"]}


@pytest.fixture(scope="module")
def dhan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_tiny_data

    return make_run(make_tiny_data(), tmp_path_factory.mktemp("abuse"), "dhan")


@pytest.fixture(scope="module")
def client(dhan_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ScoringService(load_scorer(run=dhan_run)))) as c:
        yield c


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


NESTED = {"a": [{"b": [1, {"c": None}]}] * 3}
BAD_REQUESTS: list[tuple[str, bytes]] = [
    ("empty body", b""),
    ("not json", b"{not json"),
    ("non-utf8 bytes", b'{"candidates": ["\xff\xfe"]}'),
    ("lone surrogate escape", b'{"candidates": ["\\ud800"]}'),
    ("nul byte", b'{"candidates": ["a\x00"]}'),
    ("json array", _j(["item2"])),
    ("json string", _j("item2")),
    ("json null", b"null"),
    ("number", b"1e999"),
    ("missing candidates", _j({"history": ["item2"]})),
    ("candidates a string", _j({"candidates": "item2"})),
    ("candidates null", _j({"candidates": None})),
    ("candidates a dict", _j({"candidates": {"a": 1}})),
    ("candidates nested lists", _j({"candidates": [["item2"]]})),
    ("candidates nested garbage", _j({"candidates": [NESTED]})),
    ("candidates floats", _j({"candidates": [1.5]})),
    ("candidates bools", _j({"candidates": [True]})),
    ("candidates empty", _j({"candidates": []})),
    ("too many candidates", _j({"candidates": ["item2"] * 1001})),
    ("history a string", _j({"candidates": ["item2"], "history": "item3"})),
    ("history nested", _j({"candidates": ["item2"], "history": [NESTED]})),
    ("top a string", _j({**GOOD, "top": "5"})),
    ("top zero", _j({**GOOD, "top": 0})),
    ("top huge", b'{"candidates": ["item2"], "top": 99999999999999999999999}'),
    ("top negative huge", _j({**GOOD, "top": -(2**63)})),
    ("top float", _j({**GOOD, "top": 1e308})),
    ("explain not bool", _j({**GOOD, "explain": "yes"})),
    ("unknown field", _j({**GOOD, "path": "/etc/passwd"})),
    ("item_attributes a list", _j({**GOOD, "item_attributes": ["x"]})),
    ("item_attributes nested", _j({**GOOD, "item_attributes": {"x": {"category": {"deep": 1}}}})),
    ("item_attributes unknown attribute", _j({"candidates": ["x"], "item_attributes": {"x": {"colour": "red"}}})),
    ("deeply nested", b'{"candidates": ' + b"[" * 10000 + b"]" * 10000 + b"}"),
    ("duplicate keys garbage", b'{"candidates": ["item2"], "candidates": 5}'),
    ("trailing garbage", _j(GOOD) + b"xyz"),
    ("huge body", b'{"candidates": ["' + b"a" * (10 << 20) + b'"]}'),
    ("huge array of ids", _j({"candidates": ["item2"], "history": ["item3"] * 200_000})),
]


@pytest.mark.parametrize(("name", "body"), BAD_REQUESTS, ids=[n for n, _ in BAD_REQUESTS])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(client: TestClient, name: str, body: bytes) -> None:
    r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert isinstance(error, str)
    assert len(error) < 2000  # the message never echoes a huge body back
    ok = client.post("/v1/score", json=GOOD)
    assert ok.status_code == 200
    assert len(ok.json()["scores"]) == 2


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("huge numbers as ids", b'{"candidates": [9223372036854775807, -9223372036854775808], "history": [0]}'),
        ("long history is cut", _j({"candidates": ["item2"], "history": [f"x{i}" for i in range(5000)]})),
        ("odd unicode ids", _j({"candidates": ["é", "🙂", "\u2028", " "], "history": ["\t"]})),
        ("odd attribute values", _j({"candidates": ["n"], "item_attributes": {"n": {"brand": "\x00"}}})),
        ("an id beyond 64 bits is an unknown id", b'{"candidates": [99999999999999999999999999999]}'),
    ],
)  # fmt: skip
def test_odd_but_valid_requests_are_scored(client: TestClient, name: str, body: bytes) -> None:
    r = client.post("/v1/score", content=body)
    assert r.status_code == 200, r.text
    assert all(0.0 <= s <= 1.0 for s in r.json()["scores"])


def test_request_paths_are_just_unknown_ids(client: TestClient, dhan_run: Path, tmp_path: Path) -> None:
    """Nothing in a request names a file: a history id that looks like a path (even one that exists, with a model
    in it) is an unknown item id, and no file is opened."""
    opened: list[str] = []
    real_open = open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    paths = [str(dhan_run / "config.json"), "/etc/passwd", "../../etc/shadow", "file:///etc/passwd", str(dhan_run)]
    import builtins

    builtins.open = spy  # type: ignore[assignment]
    try:
        r = client.post("/v1/score", json={"history": paths, "candidates": [*paths, "item2"]})
    finally:
        builtins.open = real_open
    assert r.status_code == 200
    assert r.json()["unknown_items"] == paths
    assert not [p for p in opened if any(x in p for x in ("passwd", "shadow", "config.json"))]


def test_the_default_bind_address_is_loopback() -> None:
    import inspect as pyinspect

    from dhan.cli import build_parser  # noqa: F401  (the CLI's own parser below)
    from dhan.cli.serve import add_arguments
    from dhan.serve import run_server

    assert pyinspect.signature(run_server).parameters["host"].default == "127.0.0.1"
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--run", "r"]).host == "127.0.0.1"


# ------------------------------------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = port

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(dhan_run: Path) -> Iterator[_Server]:
    service = ScoringService(load_scorer(run=dhan_run), body_timeout_s=1.5)
    with _Server(create_app(service), _free_port()) as s:
        yield s


def _raw(port: int, data: bytes, pause: float = 0.0, chunks: int = 1) -> bytes:
    """Send ``data`` over a plain socket in ``chunks`` pieces ``pause`` s apart; the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        step = max(1, len(data) // chunks)
        for i in range(0, len(data), step):
            try:
                s.sendall(data[i : i + step])
            except OSError:  # the server answered and closed early (413, 408)
                break
            if pause:
                time.sleep(pause)
        out = b""
        while True:
            try:
                block = s.recv(65536)
            except OSError:
                break
            if not block:
                break
            out += block
        return out


def _post_raw(body: bytes, length: int | None = None, chunked: bool = False) -> bytes:
    head = b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1


def _good(port: int) -> None:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=GOOD, timeout=10)
    assert r.status_code == 200
    assert len(r.json()["scores"]) == 2


def test_real_server_binds_loopback_and_answers(server: _Server) -> None:
    assert server.server.config.host == "127.0.0.1"
    _good(server.port)


@pytest.mark.parametrize(
    ("name", "request_bytes", "status"),
    [
        ("10 MB body with Content-Length", _post_raw(b'{"candidates": ["' + b"a" * (10 << 20) + b'"]}'), 413),
        ("10 MB chunked body", _post_raw(b'{"candidates": ["' + b"a" * (10 << 20) + b'"]}', chunked=True), 413),
        ("Content-Length lies high (body never comes)", _post_raw(_j(GOOD), length=5000), 408),
        ("Content-Length not a number", _post_raw(_j(GOOD)).replace(b"Content-Length: ", b"Content-Length: x"), 400),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 400),
        ("non-utf8 headers", _post_raw(_j(GOOD)).replace(b"Host: 127.0.0.1", b"Host: \xff\xfe"), 200),
    ],
)
def test_real_server_big_and_broken_requests(server: _Server, name: str, request_bytes: bytes, status: int) -> None:
    answer = _raw(server.port, request_bytes)
    got = _status(answer)
    if status == 400:
        assert 400 <= got < 500 or got == -1, answer[:200]  # h11 may also just close a garbage connection
    else:
        assert got == status, answer[:300]
    _good(server.port)


@pytest.mark.slow
def test_slow_clients_get_408_and_do_not_block_others(server: _Server) -> None:
    """Five clients dribble a body a few bytes every 0.4 s; meanwhile good requests are answered at once."""
    body = _j(GOOD)
    results: list[int] = []

    def slow() -> None:
        results.append(_status(_raw(server.port, _post_raw(body), pause=0.4, chunks=40)))

    threads = [threading.Thread(target=slow) for _ in range(5)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    for _ in range(10):
        _good(server.port)
    assert time.monotonic() - t0 < 5  # the slow ones hold no worker
    for t in threads:
        t.join(timeout=30)
    assert results == [408] * 5
    _good(server.port)


# ------------------------------------------------------------------------------------------- short soak


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_short_soak(server: _Server) -> None:
    """16 clients for 5 s (the full soak, 64 clients for 60 s, is benchmarks/serve_soak.py): no 5xx, every request
    answered, memory growth bounded, and the server still answers afterwards."""
    url = f"http://127.0.0.1:{server.port}/v1/score"
    bodies = [
        _j({"history": [f"item{(i * 7 + k) % 12 + 2}" for k in range(i % 6)], "candidates": [f"item{i % 12 + 2}"] * 20})
        for i in range(32)
    ]

    async def client(c: httpx.AsyncClient, i: int, stop: float, codes: list[int]) -> None:
        n = i
        while time.monotonic() < stop:
            r = await c.post(url, content=bodies[n % len(bodies)], headers={"content-type": "application/json"})
            codes.append(r.status_code)
            n += 1

    async def soak(seconds: float) -> list[int]:
        codes: list[int] = []
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=30) as c:
            stop = time.monotonic() + seconds
            await asyncio.gather(*(client(c, i, stop, codes) for i in range(16)))
        return codes

    asyncio.run(soak(1.0))  # warm-up: allocator pools and torch caches settle
    before = _rss_kib()
    codes = asyncio.run(soak(5.0))
    growth_mib = (_rss_kib() - before) / 1024
    assert len(codes) > 50
    assert all(200 <= c < 300 for c in codes), sorted(set(codes))
    assert growth_mib < 64, growth_mib  # bound: 64 MiB (measured a few MiB)
    _good(server.port)
    print(f"\nshort soak: {len(codes)} requests, non-2xx 0, RSS growth {growth_mib:.1f} MiB")
