"""``dhan compare``: models times seeds, then the paper's tables (mean ± std, RelaImpr, significance) and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from dhan.config import PRESETS, PROTOCOLS

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("base", "wdl", "pnn", "din", "dien", "dhan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument(
        "--models", help=f"comma-separated model names (default: the config's models, else {','.join(DEFAULT_MODELS)})"
    )
    parser.add_argument("--seeds", type=int, help="runs per model, seeds 0..N-1 (default: the config's, else 5)")
    parser.add_argument("--baseline", help="model RelaImpr and the t-test compare against (default: config's, din)")
    parser.add_argument("--out", required=True, help="report directory (runs go to OUT/runs/<model>/seed<k>)")
    parser.add_argument("--config", help="YAML with train/data sections and per-model `models:` overrides")
    parser.add_argument(
        "--set",
        dest="set_flags",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every run (model.* keys must exist in every model; per-model settings go in "
        "the --config file's model_overrides)",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--protocol", choices=PROTOCOLS, help="paper = select on test as the authors did (BIASED)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_compare_config(path: str | None) -> dict[str, Any]:
    """A compare YAML: the train/data sections of `dhan train --config`, plus `model_overrides: {name: {...}}`."""
    import yaml

    from dhan.errors import UserError

    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: cannot read config ({str(exc).splitlines()[0]})") from None
    allowed = {"description", "models", "seeds", "baseline", "preset", "train", "data", "model_overrides"}
    if not isinstance(data, dict) or set(data) - allowed:
        bad = sorted(set(data) - allowed) if isinstance(data, dict) else data
        raise UserError(f"{p}: unknown keys {bad}; allowed: {', '.join(sorted(allowed))}")
    return data


def make_figures(report: Path, models: tuple[str, ...], data: Any) -> list[str]:
    """Figure 5 (training curves of seed 0 of every model) and Figure 4 (category attention of the first
    model that has it, for the first test user with a positive sample)."""
    from dhan.checkpoint import load_run_model
    from dhan.errors import UserError
    from dhan.experiments import run_dir
    from dhan.explain import explain_sample
    from dhan.plots import plot_group_attention, plot_training_curves

    figures = []
    plot_training_curves([run_dir(report, m, 0) for m in models], report / "training_curves.png", list(models))
    figures.append("training_curves.png")
    raw_user = _user_with_most_categories(data)
    if raw_user is None:
        return figures
    for m in models:
        model, _, _ = load_run_model(run_dir(report, m, 0))
        if not hasattr(model, "explain"):
            continue
        try:
            ex = explain_sample(model, data, raw_user)
        except UserError:
            continue
        if not ex.groups:
            continue
        g = ex.groups[0]
        name = f"attention_{m}.png"
        title = f"{m}: user {ex.user}, target {ex.target} ({ex.target_attributes.get(g.attribute, '')})"
        plot_group_attention(g.names, g.weights, title, report / name)
        figures.append(name)
        break
    return figures


def _user_with_most_categories(data: Any, candidates: int = 200) -> str | None:
    """A test user (among the first ``candidates`` with a positive) whose history spans the most categories:
    a Figure-4 bar chart with one bar says little."""
    import numpy as np

    test = data.split("test")
    rows = np.flatnonzero(test.label == 1)[:candidates]
    if rows.size == 0:
        return None
    if "category" not in data.schema.attribute_names:
        return str(data.user_raw_ids[int(test.user[rows[0]])])
    col = data.schema.attribute_index("category")
    max_len = data.schema.max_len

    def distinct(row: int) -> int:
        u, p = int(test.user[row]), int(test.position[row])
        start = data.offsets[u] + max(0, p - max_len)
        return len(np.unique(data.item_attrs[data.hist_item[start : data.offsets[u] + p], col]))

    best = max(rows.tolist(), key=distinct)
    return str(data.user_raw_ids[int(test.user[best])])


def run(args: argparse.Namespace) -> int:
    from dhan.data.store import PreparedData
    from dhan.experiments import CompareSpec, build_report, run_all, table_text, write_report

    cfg = load_compare_config(args.config)
    if args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    else:
        models = tuple(cfg.get("models") or DEFAULT_MODELS)
    spec = CompareSpec(
        models=models,
        seeds=args.seeds if args.seeds is not None else int(cfg.get("seeds", 5)),
        baseline=args.baseline or str(cfg.get("baseline", "din")),
        preset=args.preset or str(cfg.get("preset", "paper")),
        file_config={k: cfg[k] for k in ("train", "data") if k in cfg},
        model_configs=cfg.get("model_overrides") or {},
        set_flags=tuple(args.set_flags),
        train_flags={
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "device": args.device,
            "protocol": args.protocol,
        },
    )
    data = PreparedData.load(args.data)
    report = Path(args.out)
    run_all(spec, data, str(args.data), report, progress=not args.quiet)
    rep = build_report(spec, report, str(args.data))
    figures = make_figures(report, models, data)
    write_report(rep, report, figures)
    print(table_text(rep))
    print(f"\nreport: {report / 'report.md'} and {report / 'report.json'}")
    print("figures: " + ", ".join(str(report / f) for f in figures))
    return 0
