"""``dhan serve``: score candidates for a history over HTTP (FastAPI + uvicorn; ``pip install 'dhan[serve]'``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory made by `dhan train` (eager PyTorch; explanations available)")
    source.add_argument("--model", help="artifact made by `dhan export` (TorchScript or ONNX, detected from the file)")
    parser.add_argument("--data", help="with --run: prepared dataset with the id maps (default: the run's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-candidates", type=int, default=1000, help="most candidates per request")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body accepted")
    parser.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds a client may take to send its body (then 408)"
    )
    parser.add_argument(
        "--batching",
        action="store_true",
        help="merge concurrent requests into one model call (off by default: it did not raise throughput in "
        "docs/benchmarks.md#serving)",
    )
    parser.add_argument("--batch-window-ms", type=float, default=1.0, help="how long to wait for requests to merge")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")


def run(args: argparse.Namespace) -> int:
    from dhan.errors import UserError

    if args.max_candidates < 1 or args.max_body_bytes < 1:
        raise UserError("--max-candidates and --max-body-bytes must be >= 1")
    if not 0 < args.body_timeout < float("inf"):
        raise UserError(f"--body-timeout {args.body_timeout}: must be a positive number of seconds")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 and 65535")
    if args.data and not args.run:
        raise UserError("--data goes with --run; an exported --model carries its own id maps")
    import torch

    from dhan.serve import load_scorer, run_server

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    scorer = load_scorer(run=args.run, model=args.model, data=args.data)
    run_server(
        scorer,
        args.host,
        args.port,
        batching=args.batching,
        batch_window_ms=args.batch_window_ms,
        max_candidates=args.max_candidates,
        max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout,
    )
    return 0
