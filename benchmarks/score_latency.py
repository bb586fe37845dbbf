"""In-process scoring latency: one user (T = 100) against 1, 100 and 1,000 candidates, and batch throughput.

    python benchmarks/score_latency.py --json score.json [--threads 2] [--device cpu|cuda] [--embedding-dim 64]

Eval mode under ``torch.inference_mode``; shapes as ``train_throughput.py`` (D = 128, attention 80-40-1 sigmoid,
head 200-80-1 ReLU), 1,000 categories, structured synthetic histories. For each model and candidate count it times

* ``forward``: the plain forward on a batch of K rows that repeats the user's history K times, and
* ``score_candidates``: ``model.score_candidates(history_of_1, items, attrs)``, which computes the history's
  embeddings, the activation units' key terms, DHAN's grouping and DIEN's GRU once per user,

and reports p50 / p99 in milliseconds. Batch throughput: ``forward`` on batches of 1,024 different users.
Target: 100 candidates for one user under 5 ms p50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402
from train_throughput import our_overrides  # noqa: E402

from dhan.allocator import tune_malloc  # noqa: E402
from dhan.batch import Batch  # noqa: E402
from dhan.models import CTRModel, build_model  # noqa: E402
from dhan.schema import AttributeSpec, Schema  # noqa: E402

T = 100
CATEGORIES = 1000


def percentiles(fn, repeats: int, budget_s: float) -> tuple[float, float, int]:
    for _ in range(3):
        fn()
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < repeats and (time.perf_counter() < end or len(times) < 10):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="din,dien,dhan,dhan-gru")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--budget", type=float, default=4.0, help="seconds per measurement at most")
    p.add_argument(
        "--embedding-dim",
        type=int,
        default=bc.EMBED_DIM,
        help=f"item and category embedding size each (default {bc.EMBED_DIM}: D = {2 * bc.EMBED_DIM}, the paper's)",
    )
    args = p.parse_args()
    tune_malloc()  # as `dhan serve` does
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    arrays = bc.make_arrays(1024, T, CATEGORIES, seed=0)
    schema = Schema(
        num_users=1,
        num_items=bc.NUM_ITEMS,
        max_len=T,
        attributes=(AttributeSpec("category", "category", 1, CATEGORIES),),
    )

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device)

    full = Batch(
        target_item=tensor(arrays.target_item),
        target_attrs=tensor(arrays.target_cate)[:, None],
        hist_items=tensor(arrays.hist_item),
        hist_attrs=tensor(arrays.hist_cate)[..., None],
        hist_mask=torch.ones(1024, T, dtype=torch.bool, device=device),
    )
    history = Batch(
        target_item=full.target_item[:1],
        target_attrs=full.target_attrs[:1],
        hist_items=full.hist_items[:1],
        hist_attrs=full.hist_attrs[:1],
        hist_mask=full.hist_mask[:1],
    )
    rng = np.random.default_rng(1)
    all_items = rng.integers(2, bc.NUM_ITEMS + 2, size=1000)
    rows = []
    print(f"{'model':9} {'K':>5} {'forward p50/p99 ms':>20} {'score_candidates p50/p99 ms':>28}")
    for name in [m for m in args.models.split(",") if m]:
        torch.manual_seed(0)
        overrides = {**our_overrides(name), "item_embedding_dim": args.embedding_dim}
        overrides["attribute_embedding_dim"] = args.embedding_dim
        model = build_model(name, schema, overrides).to(device).eval()
        with torch.inference_mode():
            for k in (1, 100, 1000):
                items = tensor(all_items[:k])
                attrs = tensor(arrays.item_cate[all_items[:k]])[:, None]
                repeated = Batch(
                    target_item=items,
                    target_attrs=attrs,
                    hist_items=history.hist_items.expand(k, -1).contiguous(),
                    hist_attrs=history.hist_attrs.expand(k, -1, -1).contiguous(),
                    hist_mask=history.hist_mask.expand(k, -1).contiguous(),
                )

                def plain(model: CTRModel = model, batch: Batch = repeated) -> None:
                    model(batch)
                    sync()

                def fast(model: CTRModel = model, items: torch.Tensor = items, attrs: torch.Tensor = attrs) -> None:
                    model.score_candidates(history, items, attrs)
                    sync()

                p50, p99, n = percentiles(plain, args.repeats, args.budget)
                f50, f99, fn = percentiles(fast, args.repeats, args.budget)
                rows.append(
                    {"model": name, "candidates": k, "forward_p50_ms": p50, "forward_p99_ms": p99,
                     "score_candidates_p50_ms": f50, "score_candidates_p99_ms": f99, "repeats": [n, fn]}
                )  # fmt: skip
                print(f"{name:9} {k:>5} {p50:>9.2f} / {p99:<8.2f} {f50:>13.2f} / {f99:<8.2f}", flush=True)
            p50, _, n = percentiles(lambda model=model: (model(full), sync()), 20, 2 * args.budget)
            rows.append({"model": name, "batch_1024_samples_per_s": 1024 / (p50 / 1000), "repeats": n})
            print(f"{name:9} batch 1024: {1024 / (p50 / 1000):,.0f} samples/s scored", flush=True)
    result = {
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "device": args.device, "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "T": T,
        "categories": CATEGORIES,
        "embedding_dim": args.embedding_dim,
        "rows": rows,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
