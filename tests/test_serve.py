"""``dhan serve``: scoring, explanations, metadata and bad requests through FastAPI's TestClient; the batcher."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dhan.batch import Batch
from dhan.data.store import PreparedData
from dhan.export import export_run, load_run
from dhan.serve import ScoringService, create_app, load_scorer
from runs import make_run

with warnings.catch_warnings():
    # starlette asks for its `httpx2` fork; the TestClient works the same with httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def dhan_run(root: Path) -> Path:
    from conftest import make_tiny_data

    return make_run(make_tiny_data(), root, "dhan")


@pytest.fixture
def client(dhan_run: Path) -> Iterator[TestClient]:
    service = ScoringService(load_scorer(run=dhan_run), batching=False)
    with TestClient(create_app(service)) as c:
        yield c


def eager_scores(run: Path, history: list[int], candidates: list[int]) -> np.ndarray:
    loaded = load_run(run)
    attrs = torch.from_numpy(loaded.data.item_attrs)
    b, t = len(candidates), max(len(history), 1)
    hist = torch.zeros(b, t, dtype=torch.long)
    hist[:, : len(history)] = torch.tensor(history, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[:, : len(history)] = True
    target = torch.tensor(candidates)
    batch = Batch(target, attrs[target], hist, attrs[hist], mask)
    with torch.no_grad():
        return torch.sigmoid(loaded.model(batch).logits).numpy()


def test_healthz_and_metadata(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    meta = client.get("/v1/metadata").json()
    assert meta["model"] == "dhan"
    assert meta["backend"] == "eager"
    assert meta["max_len"] == 5
    assert meta["schema"]["num_items"] == 12
    assert meta["limits"]["max_candidates"] == 1000
    assert meta["dhan_version"]


def test_scores_are_the_models_probabilities_in_candidate_order(client: TestClient, dhan_run: Path) -> None:
    body = {"history": ["item3", "item7", "item4"], "candidates": ["item5", "item9", "item2"]}
    r = client.post("/v1/score", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["unknown_items"] == []
    np.testing.assert_allclose(out["scores"], eager_scores(dhan_run, [3, 7, 4], [5, 9, 2]), atol=1e-6)
    rev = client.post("/v1/score", json={**body, "candidates": body["candidates"][::-1]}).json()
    np.testing.assert_allclose(rev["scores"], out["scores"][::-1], atol=1e-6)
    empty = client.post("/v1/score", json={"candidates": ["item5"]}).json()
    np.testing.assert_allclose(empty["scores"], eager_scores(dhan_run, [], [5]), atol=1e-6)


def test_long_histories_keep_the_most_recent_items_and_unknown_ids_are_listed(client: TestClient) -> None:
    recent = ["item3", "item7", "item4", "item8", "item2"]
    short = client.post("/v1/score", json={"history": recent, "candidates": ["item5"]}).json()
    long = client.post("/v1/score", json={"history": ["item9"] * 20 + recent, "candidates": ["item5"]}).json()
    assert long["scores"] == pytest.approx(short["scores"], abs=1e-7)
    out = client.post("/v1/score", json={"history": ["new-a", "item3"], "candidates": ["item5", "new-b", 42]}).json()
    assert out["unknown_items"] == ["new-a", "new-b", "42"]
    assert len(out["scores"]) == 3


def test_attributes_of_unknown_items_are_used(client: TestClient) -> None:
    plain = client.post("/v1/score", json={"history": ["item3"], "candidates": ["new"]}).json()["scores"]
    given = {"new": {"category": "c1", "brand": "b2", "price_band": "nonexistent"}}
    body = {"history": ["item3"], "candidates": ["new"], "item_attributes": given}
    with_attrs = client.post("/v1/score", json=body).json()["scores"]
    assert with_attrs != plain
    # the item's category_parent follows from its category (c1 -> p1 in the tiny data), as if it had been given
    full = {"new": {**given["new"], "category_parent": "p1"}}
    assert client.post("/v1/score", json={**body, "item_attributes": full}).json()["scores"] == with_attrs


def test_explain_returns_top_items_and_categories(client: TestClient) -> None:
    body = {"history": ["item3", "item7", "item4", "item6"], "candidates": ["item5", "item9"], "explain": True}
    out = client.post("/v1/score", json={**body, "top": 2}).json()
    assert len(out["explanations"]) == 2
    ex = out["explanations"][0]
    assert len(ex["items"]) == 2
    assert {i["item"] for i in ex["items"]} <= set(body["history"])
    assert ex["items"][0]["weight"] >= ex["items"][1]["weight"]
    groups = ex["groups"]
    assert groups["attribute"] == "category"
    assert groups["source"] == "group-attention"
    assert {g["name"] for g in groups["top"]} <= {"c0", "c1", "c2", "c3"}
    assert sum(g["weight"] for g in groups["top"]) <= 1 + 1e-6


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"candidates": "item2"}).encode(), 422, "Expected `array`"),
        (json.dumps({"candidates": [1.5]}).encode(), 422, "candidates"),
        (json.dumps({"history": [], "candidates": []}).encode(), 422, "candidates is empty"),
        (json.dumps({"candidates": ["item2"] * 1001}).encode(), 422, "at most 1000"),
        (json.dumps({"candidates": ["item2"], "histroy": []}).encode(), 422, "histroy"),
        (json.dumps({"candidates": ["x"], "item_attributes": {"x": {"colour": "red"}}}).encode(), 422, "colour"),
        (json.dumps({"candidates": ["item2"], "top": 0}).encode(), 422, "top"),
        (b'{"candidates": ["' + b"a" * (1 << 20) + b'"]}', 413, "at most"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, body: bytes, status: int, fragment: str) -> None:
    r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert fragment in r.json()["error"]


def test_oversized_chunked_body_is_rejected_without_content_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"candidates": ["'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"]}'

    r = client.post("/v1/score", content=chunks())
    assert r.status_code == 413


def test_explain_needs_an_attention_model(tiny_data: PreparedData, root: Path) -> None:
    run = make_run(tiny_data, root, "base")
    with TestClient(create_app(ScoringService(load_scorer(run=run)))) as c:
        r = c.post("/v1/score", json={"history": ["item3"], "candidates": ["item2"], "explain": True})
        assert r.status_code == 422
        assert "no attention" in r.json()["error"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_artifacts_serve_the_same_scores(dhan_run: Path, root: Path, fmt: str) -> None:
    path = root / f"dhan.{fmt}"
    export_run(dhan_run, fmt, path)  # type: ignore[arg-type]
    body = {"history": ["item3", "item7", "unknown"], "candidates": ["item5", "item9", "item2", "zzz"]}
    with TestClient(create_app(ScoringService(load_scorer(model=path)))) as c:
        meta = c.get("/v1/metadata").json()
        assert meta["backend"] == fmt
        assert meta["model"] == "dhan"
        out = c.post("/v1/score", json=body).json()
        r = c.post("/v1/score", json={**body, "explain": True})
        assert r.status_code == 422
        assert "--run" in r.json()["error"]
    with TestClient(create_app(ScoringService(load_scorer(run=dhan_run)))) as c:
        ref = c.post("/v1/score", json=body).json()
    assert out["unknown_items"] == ref["unknown_items"] == ["unknown", "zzz"]
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-5)


def test_the_micro_batcher_merges_concurrent_requests_without_changing_scores(dhan_run: Path) -> None:
    scorer = load_scorer(run=dhan_run)
    rng = np.random.default_rng(0)
    bodies = [
        json.dumps(
            {
                "history": [f"item{i}" for i in rng.integers(2, 14, size=rng.integers(0, 8))],
                "candidates": [f"item{i}" for i in rng.integers(2, 14, size=rng.integers(1, 6))],
            }
        ).encode()
        for _ in range(24)
    ]

    async def run_all(service: ScoringService) -> list[list[float]]:
        try:
            outs = await asyncio.gather(*(service.score(b) for b in bodies))
        finally:
            await service.close()
        return [o["scores"] for o in outs]

    batched = ScoringService(scorer, batching=True, batch_window_ms=5)
    got = asyncio.run(run_all(batched))
    assert batched.batcher is not None
    assert batched.batcher.requests == 24
    assert batched.batcher.calls < 24
    ref = asyncio.run(run_all(ScoringService(scorer, batching=False)))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_batching_is_off_for_batch_dependent_models(tiny_data: PreparedData, root: Path) -> None:
    run = make_run(tiny_data, root, "din", "model.head_activation=dice", "model.dice_variant=batch")
    assert not ScoringService(load_scorer(run=run), batching=True).batching


def test_cli_serve_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dhan.cli import main

    garbage = tmp_path / "m.onnx"
    garbage.write_bytes(b"garbage")
    assert main(["serve", "--model", str(garbage)]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert main(["serve", "--model", str(garbage), "--data", str(tmp_path)]) == 2
