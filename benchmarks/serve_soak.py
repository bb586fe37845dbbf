"""Bounded soak of ``dhan serve`` on loopback: many concurrent clients for a fixed time, memory and latency watched.

Starts ``dhan serve`` (a subprocess bound to 127.0.0.1 on a free port), waits for ``/healthz``, then runs
``--clients`` asyncio + httpx clients in a closed loop for ``--duration`` seconds (a mix of request sizes: 1-100
candidates, empty to full histories, some unknown ids). It samples the server's resident memory (``VmRSS`` in
``/proc/PID/status``) every second and reports: requests served, non-2xx answers (must be 0), RSS at the start and
end and its growth against ``--rss-bound-mib``, and p50/p99 latency per ``--window`` seconds (stable p99 = no
window far above the others). Exit code 1 if any answer was not 2xx or the growth exceeds the bound.

    python benchmarks/serve_soak.py                      # trains a tiny synthetic DHAN run first; 64 clients, 60 s
    python benchmarks/serve_soak.py --run RUN --clients 64 --duration 60 --out soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run directory to serve (default: train a tiny synthetic DHAN run first)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    p.add_argument("--window", type=float, default=10.0, help="seconds per latency window")
    p.add_argument("--rss-bound-mib", type=float, default=64.0, help="allowed RSS growth over the measured part")
    p.add_argument("--threads", type=int, default=1, help="server torch threads")
    p.add_argument("--out", help="JSON file for the results")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def tiny_run(root: Path) -> Path:
    data, run = root / "ds", root / "run"
    py = [sys.executable, "-m", "dhan"]
    subprocess.run([*py, "prepare", "synthetic", "--users", "300", "--items", "600", "--out", str(data)], check=True)
    subprocess.run(
        [*py, "train", "--data", str(data), "--model", "dhan", "--out", str(run), "--max-steps", "20", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bodies(meta: dict[str, Any], n: int, rng: random.Random) -> list[bytes]:
    items = list(meta["schema"].get("item_raw_ids", []))
    out = []
    for _ in range(n):
        k = rng.choice([1, 5, 20, 100])
        h = rng.choice([0, 3, 20, meta["max_len"]])
        cands = [rng.choice(items) if items and rng.random() > 0.05 else f"new-{rng.randrange(1000)}" for _ in range(k)]
        hist = [rng.choice(items) if items and rng.random() > 0.05 else f"new-{rng.randrange(1000)}" for _ in range(h)]
        out.append(json.dumps({"history": hist, "candidates": cands}).encode())
    return out


async def load(url: str, args: argparse.Namespace, payloads: list[bytes], pid: int) -> dict[str, Any]:
    lat: list[tuple[float, float]] = []  # (time since start, seconds)
    codes: dict[int, int] = {}
    errors: dict[str, int] = {}
    error_detail: list[str] = []  # the first few, with the time they happened
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    measure_from = t0 + args.warmup
    stop = measure_from + args.duration

    async def client(c: httpx.AsyncClient, i: int) -> None:
        n = i
        while (now := time.monotonic()) < stop:
            try:
                r = await c.post(url, content=payloads[n % len(payloads)], headers={"content-type": "application/json"})
                code = r.status_code
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if len(error_detail) < 10:
                    error_detail.append(f"t={now - measure_from:.1f}s after {time.monotonic() - now:.2f}s: {exc!r}")
                code = -1
            done = time.monotonic()
            if now >= measure_from:
                lat.append((now - measure_from, done - now))
                codes[code] = codes.get(code, 0) + 1
            n += 1

    async def sampler() -> None:
        while time.monotonic() < stop:
            now = time.monotonic()
            if now >= measure_from:
                rss.append((now - measure_from, rss_mib(pid)))
            await asyncio.sleep(1.0)
        rss.append((time.monotonic() - measure_from, rss_mib(pid)))

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:
        await asyncio.gather(sampler(), *(client(c, i) for i in range(args.clients)))
    windows = []
    arr = np.array(lat) if lat else np.zeros((0, 2))
    for w in range(int(np.ceil(args.duration / args.window))):
        sel = arr[(arr[:, 0] >= w * args.window) & (arr[:, 0] < (w + 1) * args.window), 1] * 1000
        if len(sel):
            windows.append(
                {
                    "window_s": [w * args.window, (w + 1) * args.window],
                    "requests": len(sel),
                    "p50_ms": round(float(np.percentile(sel, 50)), 2),
                    "p99_ms": round(float(np.percentile(sel, 99)), 2),
                }
            )
    served = sum(v for k, v in codes.items() if 200 <= k < 300)
    start_rss, end_rss = rss[0][1], rss[-1][1]
    p99s = [w["p99_ms"] for w in windows]
    return {
        "clients": args.clients,
        "duration_s": args.duration,
        "requests": len(lat),
        "requests_served_2xx": served,
        "requests_per_s": round(len(lat) / args.duration, 1),
        "non_2xx": len(lat) - served,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "client_errors": errors,
        "client_error_detail": error_detail,
        "rss_mib": {"start": round(start_rss, 1), "end": round(end_rss, 1), "max": round(max(r for _, r in rss), 1)},
        "rss_growth_mib": round(end_rss - start_rss, 1),
        "rss_bound_mib": args.rss_bound_mib,
        "windows": windows,
        "p99_ms_min_max": [min(p99s), max(p99s)] if p99s else None,
        "p99_max_over_median": round(max(p99s) / float(np.median(p99s)), 2) if p99s else None,
    }


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="dhan-soak-")
    run = Path(args.run) if args.run else tiny_run(Path(tmp.name))
    port = free_port()
    cmd = [sys.executable, "-m", "dhan", "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        meta = httpx.get(f"{base}/v1/metadata", timeout=10).json()
        from dhan.export import load_run

        raw_ids = load_run(run).data.item_raw_ids[2:]
        meta["schema"]["item_raw_ids"] = raw_ids
        payloads = bodies(meta, 256, rng)
        result = asyncio.run(load(f"{base}/v1/score", args, payloads, server.pid))
        result["after_soak_healthz"] = httpx.get(f"{base}/healthz", timeout=10).status_code
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}
        result["server"] = {"threads": args.threads, "model": meta["model"], "backend": meta["backend"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        tmp.cleanup()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = result["non_2xx"] == 0 and result["rss_growth_mib"] <= args.rss_bound_mib
    ok = ok and result["after_soak_healthz"] == 200
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
