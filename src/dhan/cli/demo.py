"""``dhan demo``: the embedded synthetic dataset, DIN against DHAN over 3 seeds, the report and both figures.

Sized to finish in a few minutes on 2 CPU cores: small embeddings (16 + 16), histories cut to the last 30
behaviours, 2 epochs. The synthetic data is built so that the next item is usually unseen but from a favoured
category (see :mod:`dhan.data.synthetic`), which is the situation category-level attention is meant for.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_MODELS = ("din", "dhan")
DEMO_SEEDS = 3
DEMO_SETTINGS = (
    "model.item_embedding_dim=16",
    "model.attribute_embedding_dim=16",
    "data.max_len=30",
    "train.epochs=2",
    "train.eval_every=100",
    "train.batch_size=256",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="dhan-demo", help="directory for the data, runs, report and figures")
    parser.add_argument("--seeds", type=int, default=DEMO_SEEDS, help="runs per model")
    parser.add_argument("--users", type=int, default=2000, help="synthetic users")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dhan.cli.compare import make_figures
    from dhan.data.prepare import PrepareOptions, prepare
    from dhan.data.store import PreparedData
    from dhan.data.synthetic import GeneratorParams, generate
    from dhan.experiments import CompareSpec, build_report, run_all, table_text, write_report

    start = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    if (data_dir / "schema.json").is_file():
        log.info("using the synthetic dataset already in %s", data_dir)
    else:
        log.info("preparing the synthetic dataset in %s", data_dir)
        data, _ = prepare(generate(GeneratorParams(users=args.users)), PrepareOptions())
        data.save(data_dir)
    data = PreparedData.load(data_dir)
    s = data.schema
    log.info(
        "%d users, %d items, %d categories; %d train / %d valid / %d test samples",
        s.num_users,
        s.num_items,
        s.num_categories,
        len(data.split("train")),
        len(data.split("valid")),
        len(data.split("test")),
    )
    spec = CompareSpec(models=DEMO_MODELS, seeds=args.seeds, baseline="din", set_flags=DEMO_SETTINGS)
    run_all(spec, data, str(data_dir), out, progress=not args.quiet)
    rep = build_report(spec, out, str(data_dir))
    figures = make_figures(out, DEMO_MODELS, data)
    write_report(rep, out, figures)
    print()
    print(table_text(rep))
    print()
    print(f"report:  {out / 'report.md'}  ({out / 'report.json'})")
    for f in figures:
        print(f"figure:  {out / f}")
    print(f"runs:    {out / 'runs'}  (each with config.json, metrics.jsonl, metrics.json, best.pt)")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
