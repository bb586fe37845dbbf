"""Load test of ``dhan serve`` on loopback: a bounded asyncio + httpx client at several concurrency levels.

Starts ``dhan serve`` (a subprocess on 127.0.0.1), waits for ``/healthz``, then for each concurrency level runs that
many clients in a closed loop for a fixed time; every request scores ``--candidates`` items against a history of
``--history`` items drawn from the model's own vocabulary. Prints requests/s, p50/p99 latency and the number of
non-2xx answers (must be 0), and writes everything as JSON.

    python benchmarks/serve_load.py --run RUN [--model FILE] --out results.json
    python benchmarks/serve_load.py --run RUN --batching   # the same with the server's micro-batcher
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory to serve (eager)")
    src.add_argument("--model", help="exported artifact to serve")
    p.add_argument("--data", help="with --run: the prepared dataset (default: the run's)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured requests first")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--history", type=int, default=100)
    p.add_argument("--bodies", type=int, default=64, help="distinct request bodies to cycle through")
    p.add_argument("--batching", action="store_true", help="start the server with --batching (micro-batcher)")
    p.add_argument("--threads", type=int, default=0, help="server torch threads (0 = default)")
    p.add_argument("--out", help="JSON file for the results")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def start_server(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dhan", "serve", "--host", "127.0.0.1", "--port", str(args.port)]
    cmd += ["--run", args.run] if args.run else ["--model", args.model]
    if args.run and args.data:
        cmd += ["--data", args.data]
    if args.batching:
        cmd.append("--batching")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, start_new_session=True)


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"dhan serve exited with code {proc.returncode}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return (await client.get("/v1/metadata")).json()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("dhan serve did not become healthy in time")


def make_bodies(items: list[str], args: argparse.Namespace) -> list[bytes]:
    rng = random.Random(args.seed)
    return [
        json.dumps(
            {"history": rng.choices(items, k=args.history), "candidates": rng.sample(items, k=args.candidates)}
        ).encode()
        for _ in range(args.bodies)
    ]


async def level(base: str, bodies: list[bytes], clients: int, duration: float, warmup: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        start = time.monotonic()
        measure_from = start + warmup
        stop = measure_from + duration

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while True:
                t0 = time.monotonic()
                if t0 >= stop:
                    return
                try:
                    r = await client.post("/v1/score", content=bodies[i % len(bodies)], headers=headers)
                    code = r.status_code
                except httpx.HTTPError:
                    code = -1
                t1 = time.monotonic()
                i += clients
                if t0 >= measure_from and t1 <= stop:
                    latencies.append(t1 - t0)
                    statuses[code] = statuses.get(code, 0) + 1
                    if not 200 <= code < 300:
                        errors += 1

        await asyncio.gather(*(worker(k) for k in range(clients)))
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": int(lat.size),
        "requests_per_s": lat.size / duration,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "non_2xx": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = f"http://127.0.0.1:{args.port}"
    proc = start_server(args)
    try:
        meta = await wait_healthy(base, proc)
        items = [f"item{i}" for i in range(meta["schema"]["num_items"])]
        if args.run:
            from dhan.export import load_run

            items = load_run(args.run, args.data).data.item_raw_ids[2:]
        bodies = make_bodies(items, args)
        results = []
        for clients in (int(c) for c in args.concurrency.split(",")):
            r = await level(base, bodies, clients, args.duration, args.warmup)
            results.append(r)
            p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
            p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
            sys.stdout.write(
                f"clients {clients:3d}: {r['requests_per_s']:8.1f} req/s  p50 {p50} ms  p99 {p99} ms  "
                f"non-2xx {r['non_2xx']}\n"
            )
            sys.stdout.flush()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {
        "model": meta["model"],
        "backend": meta["backend"],
        "batching": meta["batching"],
        "candidates": args.candidates,
        "history": args.history,
        "max_len": meta["max_len"],
        "duration_s": args.duration,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": results,
    }


def main() -> int:
    args = parse_args()
    out = asyncio.run(main_async(args))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if any(r["non_2xx"] for r in out["results"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
