"""Training throughput of base, din, dien, dhan, dhan-gru side by side with DeepCTR-Torch's DIN and DIEN.

    python benchmarks/train_throughput.py --quick --json train.json     # < 10 min on 2 cores
    python benchmarks/train_throughput.py --json train.json             # T = 50, 100, 200 x 10 .. 10,000 categories

One run measures, in this order: the float32 matmul peak of this machine (``torch.mm`` 2048^3 on the benchmark's
threads), the data loader alone (``dhan.data.loader.BatchLoader`` on a synthetic ``PreparedData``, no model), then
for every (T, categories) setting each of our models and DeepCTR-Torch's DIN and DIEN on the same arrays (written
once to an ``.npz``). Every measurement runs in its own process, so ``peak_rss_mb`` (``ru_maxrss``) is that model's
training peak. DeepCTR-Torch runs in a separate virtualenv that this script creates on first use
(``~/.cache/dhan-bench/deepctr-venv``: ``torch`` at our version, then ``deepctr-torch --no-deps``, tqdm, requests,
scikit-learn); it is never a dependency of ``dhan``. ``--no-deepctr`` skips it.

Shapes (identical on both sides; see ``bench_common.py``): batch 1024, item and category embeddings 64 (D = 128),
activation unit 80-40-1 sigmoid, head 200-80-1 ReLU (DeepCTR-Torch's Dice head fails on DIN's 2-D input), Adam lr
1e-3, full-length histories, a fixed seed.
DeepCTR-Torch is measured once per T (at the first category count; its DIN and DIEN do no per-category work, the
arrays differ only in category ids) and twice: as shipped, and with the allocator setting that every ``dhan``
command applies at start-up (``dhan.allocator.tune_malloc``: no ``mmap`` for large tensors), so ``ratio`` compares
the two libraries as a user gets them and ``ratio_same_allocator`` the code alone.
``mfu`` = model FLOPs per sample (forward + backward = 3 x forward, counted from the layer shapes: Linear, GRU,
pooling; the activation unit as the Linear(4D, H) on ``[q, k, q-k, q*k]`` it is defined as, the count DeepCTR-Torch
also executes) x samples/s / the measured matmul peak. ``hfu`` counts instead the FLOPs ``dhan`` executes (the split
or per-row-folded first layer, about half or a quarter of the defined one), so it is the stricter figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

OUR_MODELS = ("base", "din", "dien", "dhan", "dhan-gru")
DEEPCTR_OF = {"din": "din", "dien": "dien"}
GRU_MODELS = ("dien", "dhan-gru")
DEEPCTR_VENV = Path.home() / ".cache" / "dhan-bench" / "deepctr-venv"


# ---------------------------------------------------------------------------------------------------------------------
# our side (runs in a child process: ``--worker JOB.json``)
# ---------------------------------------------------------------------------------------------------------------------


def our_overrides(model: str) -> dict[str, object]:
    over: dict[str, object] = {
        "item_embedding_dim": bc.EMBED_DIM,
        "attribute_embedding_dim": bc.EMBED_DIM,
        "head_hidden": bc.HEAD_HIDDEN,
        "head_activation": bc.HEAD_ACTIVATION,
        "head_output": "logit",
    }
    if model != "base":
        over["attention_hidden"] = bc.ATT_HIDDEN
        over["attention_activation"] = "sigmoid"
    if model in ("dien", "dhan-gru"):
        over["attention_query_projection"] = False  # DeepCTR-Torch's DIEN attends with the raw target embedding
        over["aux_hidden"] = bc.AUX_HIDDEN
    return over


def our_worker(job: dict) -> dict:
    from dhan.allocator import tune_malloc
    from dhan.batch import Batch
    from dhan.models import build_model
    from dhan.schema import AttributeSpec, Schema

    tuned = tune_malloc()  # as every dhan command that runs a model does at start-up
    torch.set_num_threads(job["threads"])
    device = torch.device(job.get("device", "cpu"))
    data = np.load(job["npz"])
    n, t = data["hist_item"].shape
    c = int(data["num_categories"])
    attrs = (AttributeSpec("category", "category", 1, c),)
    schema = Schema(num_users=1, num_items=bc.NUM_ITEMS, max_len=t, attributes=attrs)
    torch.manual_seed(0)
    model = build_model(job["model"], schema, our_overrides(job["model"])).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    b = job["batch"]

    def tensor(name: str, k: int) -> torch.Tensor:
        return torch.from_numpy(data[name][k * b : (k + 1) * b]).to(device)

    batches = [
        Batch(
            target_item=tensor("target_item", k),
            target_attrs=tensor("target_cate", k)[:, None],
            hist_items=tensor("hist_item", k),
            hist_attrs=tensor("hist_cate", k)[..., None],
            hist_mask=torch.ones(b, t, dtype=torch.bool, device=device),
            label=tensor("label", k),
            neg_hist_items=tensor("neg_item", k) if model.needs_negatives else None,
            neg_hist_attrs=tensor("neg_cate", k)[..., None] if model.needs_negatives else None,
        )
        for k in range(n // b)
    ]
    autocast = device.type == "cuda" and job.get("bf16", False)
    model.train()

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), batch.label)
            if out.aux_loss is not None:
                loss = loss + out.aux_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds, steps = bc.time_steps(step, job["warmup"], job["steps"], job["budget_s"])
    return {"samples_per_s": b / seconds, "steps": steps, "peak_rss_mb": bc.peak_rss_mb(), "malloc_tuned": tuned}


def distinct_groups(data: dict) -> tuple[float, int]:
    """Mean and batch-max number of distinct categories per history row (what DHAN's level 2 attends over)."""
    cats = np.sort(data["hist_cate"][:1024], axis=1)
    distinct = 1 + (cats[:, 1:] != cats[:, :-1]).sum(1)
    return float(distinct.mean()), int(distinct.max())


# ---------------------------------------------------------------------------------------------------------------------
# the DeepCTR-Torch virtualenv
# ---------------------------------------------------------------------------------------------------------------------


def deepctr_python() -> Path:
    py = DEEPCTR_VENV / "bin" / "python"
    marker = DEEPCTR_VENV / ".dhan-bench-ready"
    if marker.exists():
        return py
    print(
        f"creating {DEEPCTR_VENV} (torch {torch.__version__.split('+')[0]}, deepctr-torch --no-deps, tqdm, "
        "scikit-learn, requests) ...",
        flush=True,
    )
    DEEPCTR_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(DEEPCTR_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}", "numpy"], check=True)
    subprocess.run([*pip, "--no-deps", "deepctr-torch"], check=True)
    subprocess.run([*pip, "tqdm", "scikit-learn", "requests"], check=True)
    marker.write_text("ok\n")
    return py


def run_child(python: Path | str, script: Path, job: dict, tmp: Path) -> dict | None:
    job_file = tmp / "job.json"
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"])}
    proc = subprocess.run([str(python), str(script), *(["--worker"] if script == Path(__file__).resolve() else []),
                           str(job_file)], capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        print(f"  ! {job['model']} failed:\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# loader alone
# ---------------------------------------------------------------------------------------------------------------------


def loader_benchmark(t: int, threads: int, batch: int, seconds: float) -> dict:
    from dhan.data.loader import BatchLoader, HistoryTensors
    from dhan.data.store import PreparedData, SampleTable
    from dhan.schema import AttributeSpec, Schema

    torch.set_num_threads(threads)
    rng = np.random.default_rng(7)
    users, per_user = 20_000, 3 * t  # every sample has a full-length history
    n = users * per_user
    attrs = (AttributeSpec("category", "category", 1, 1000),)
    schema = Schema(num_users=users, num_items=bc.NUM_ITEMS, max_len=t, attributes=attrs)
    item_attrs = bc.item_category(1000)[:, None]
    offsets = np.arange(users + 1, dtype=np.int64) * per_user
    hist_item = rng.integers(2, bc.NUM_ITEMS + 2, size=n)
    user = np.repeat(np.arange(users), per_user - t)
    position = np.tile(np.arange(t, per_user), users)
    targets = rng.integers(2, bc.NUM_ITEMS + 2, size=len(user))
    samples = SampleTable(user, position, targets, np.ones(len(user), np.int8))
    data = PreparedData(
        schema=schema,
        item_attrs=item_attrs,
        item_raw_ids=[],
        attribute_values={},
        user_raw_ids=[],
        offsets=offsets,
        hist_item=hist_item,
        hist_time=np.arange(n),
        hist_neg=rng.integers(2, bc.NUM_ITEMS + 2, size=n),
        samples={"train": samples},
    )
    loader = BatchLoader(HistoryTensors(data), samples, batch, shuffle=True, seed=0)
    count, start = 0, time.perf_counter()
    for _ in loader:
        count += 1
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    stored_mb = (data.hist_item.nbytes + data.hist_neg.nbytes + data.hist_time.nbytes + offsets.nbytes) / 2**20
    copied_mb = len(user) * t * 8 * 2 / 2**20  # the same data stored per sample (items + negatives)
    return {
        "T": t,
        "batches_per_s": count / elapsed,
        "samples_per_s": count * batch / elapsed,
        "samples": len(user),
        "stored_history_mb": stored_mb,
        "per_sample_copy_mb": copied_mb,
        "peak_rss_mb": bc.peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(our_worker(json.loads(Path(sys.argv[2]).read_text()))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="T in {50, 100}, categories in {10, 10000}, fewer steps; dien and dhan-gru once per T (first category "
        "count), one step without warm-up",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda; DeepCTR-Torch stays on cpu)")
    p.add_argument("--models", default=",".join(OUR_MODELS))
    p.add_argument("--T", default=None, help="comma-separated history lengths (overrides the mode's)")
    p.add_argument("--categories", default=None, help="comma-separated category counts (overrides the mode's)")
    p.add_argument("--no-deepctr", action="store_true")
    p.add_argument("--data", default="structured", choices=["structured", "uniform"])
    args = p.parse_args()

    lengths = [50, 100] if args.quick else [50, 100, 200]
    cats = [10, 10_000] if args.quick else [10, 100, 1_000, 10_000]
    lengths = [int(x) for x in args.T.split(",")] if args.T else lengths
    cats = [int(x) for x in args.categories.split(",")] if args.categories else cats
    models = [m for m in args.models.split(",") if m]
    warmup, steps, budget = (1, 4, 5.0) if args.quick else (2, 10, 20.0)
    torch.set_num_threads(args.threads)

    started = time.time()
    peak = bc.matmul_peak_gflops(args.threads, seconds=2.0 if args.quick else 5.0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads")
    print(f"float32 matmul peak (torch.mm 2048^3): {peak:.1f} GFLOP/s", flush=True)
    loader = [loader_benchmark(t, args.threads, args.batch, 2.0 if args.quick else 5.0) for t in lengths]
    for row in loader:
        print(
            f"loader alone T={row['T']}: {row['batches_per_s']:.1f} batches/s = {row['samples_per_s']:.0f} samples/s; "
            f"histories stored {row['stored_history_mb']:.0f} MB vs {row['per_sample_copy_mb']:.0f} MB copied per "
            f"sample; peak RSS {row['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    dctr = None if args.no_deepctr or args.device != "cpu" else deepctr_python()

    rows = []
    deepctr_cache: dict[tuple[int | str, ...], dict | None] = {}
    header = f"{'model':9} {'T':>4} {'cats':>6} {'groups':>9} {'ours/s':>8} {'deepctr/s':>9} {'ratio':>6}"
    header += f" {'dctr=al/s':>9} {'ratio':>6} {'mfu':>6} {'hfu':>6} {'RSS MB':>7}"
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for t in lengths:
            for c in cats:
                arrays = bc.make_arrays(args.batch * 4, t, c, seed=0, kind=args.data)
                npz = tmp / f"data_T{t}_C{c}.npz"
                np.savez(npz, num_categories=c, **vars(arrays))
                mean_groups, max_groups = distinct_groups(vars(arrays))
                base_job = {"npz": str(npz), "threads": args.threads, "batch": args.batch, "warmup": warmup,
                            "steps": steps, "budget_s": budget, "device": args.device, "bf16": True}  # fmt: skip
                for m in models:
                    slow = m in GRU_MODELS
                    if args.quick and slow and c != cats[0]:
                        continue  # quick: the recurrent models once per T (their cost is the T-step recurrence)
                    # one step of 1024 of a recurrent model takes 2-60 s here: quick times one, the full grid
                    # warms up once and times up to the budget
                    job_base = base_job
                    if slow:
                        job_base = {**base_job, "warmup": 0, "steps": 1} if args.quick else {**base_job, "warmup": 1}
                    ours = run_child(sys.executable, Path(__file__).resolve(), {**job_base, "model": m}, tmp)
                    theirs: dict[str, dict | None] = {}
                    if dctr is not None and m in DEEPCTR_OF:
                        for variant in ("shipped", "tuned"):
                            # DeepCTR-Torch once per T: its DIN / DIEN do no per-category work (see --help)
                            key = (m, t, variant)
                            if key not in deepctr_cache:
                                job = {**job_base, "model": DEEPCTR_OF[m], "malloc_tuning": variant == "tuned"}
                                deepctr_cache[key] = run_child(dctr, HERE / "deepctr_worker.py", job, tmp)
                            theirs[variant] = deepctr_cache[key]
                    sps = ours["samples_per_s"] if ours else None
                    shipped, tuned = (theirs.get(v) for v in ("shipped", "tuned"))
                    dsps = shipped["samples_per_s"] if shipped else None
                    dtuned = tuned["samples_per_s"] if tuned else None
                    # dhan's target is stated against DeepCTR-Torch's DIN (DHAN = DIN's level 1 + the hierarchy)
                    din_ref = {v: deepctr_cache.get(("din", t, v)) for v in ("shipped", "tuned")}
                    din_ref_sps = {v: r["samples_per_s"] if r else None for v, r in din_ref.items()}
                    din_shipped, din_tuned = din_ref_sps["shipped"], din_ref_sps["tuned"]
                    flops = bc.training_flops(m, t, mean_groups, form="model")
                    executed = bc.training_flops(m, t, mean_groups, form="executed")
                    row = {
                        "model": m,
                        "T": t,
                        "categories": c,
                        "samples_per_s": sps,
                        "deepctr_samples_per_s": dsps,
                        "ratio": sps / dsps if sps and dsps else None,
                        "deepctr_same_allocator_samples_per_s": dtuned,
                        "ratio_same_allocator": sps / dtuned if sps and dtuned else None,
                        "deepctr_din_samples_per_s": din_shipped,
                        "ratio_to_deepctr_din": sps / din_shipped if sps and din_shipped else None,
                        "ratio_to_deepctr_din_same_allocator": sps / din_tuned if sps and din_tuned else None,
                        "mfu": flops * sps / (peak * 1e9) if sps else None,
                        "hfu": executed * sps / (peak * 1e9) if sps else None,
                        "deepctr_mfu": flops * dsps / (peak * 1e9) if dsps and m in DEEPCTR_OF else None,
                        "groups_mean": mean_groups,
                        "groups_max": max_groups,
                        "model_flops_per_sample": flops,
                        "executed_flops_per_sample": executed,
                        "peak_rss_mb": ours["peak_rss_mb"] if ours else None,
                        "deepctr_peak_rss_mb": shipped["peak_rss_mb"] if shipped else None,
                        "steps": ours["steps"] if ours else None,
                        "malloc_tuned": ours["malloc_tuned"] if ours else None,
                    }
                    rows.append(row)
                    print(
                        f"{m:9} {t:>4} {c:>6} {mean_groups:>4.1f}/{max_groups:<4} {fmt(sps, 8, 0)} {fmt(dsps, 9, 0)} "
                        f"{fmt(row['ratio'], 6, 2)} {fmt(dtuned, 9, 0)} {fmt(row['ratio_same_allocator'], 6, 2)} "
                        f"{fmt(row['mfu'], 6, 3)} {fmt(row['hfu'], 6, 3)} {fmt(row['peak_rss_mb'], 7, 0)}"
                        + (
                            f"  vs DeepCTR DIN {fmt(row['ratio_to_deepctr_din'], 0, 2)} / "
                            f"{fmt(row['ratio_to_deepctr_din_same_allocator'], 0, 2)} same allocator"
                            if m == "dhan"
                            else ""
                        ),
                        flush=True,
                    )
    result = {
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "device": args.device,
            "load_average_at_start": os.getloadavg(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "wall_s": time.time() - started,
        "matmul_peak_gflops": peak,
        "batch": args.batch,
        "data": args.data,
        "loader": loader,
        "rows": rows,
    }
    print(f"wall time {result['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def fmt(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


if __name__ == "__main__":
    main()
