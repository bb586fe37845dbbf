"""``dhan explain``: one user's attention for one target, by category name (the paper's Figure 4)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory made by `dhan train`")
    parser.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--user", required=True, metavar="RAW_USER_ID", help="user id as in the raw data")
    parser.add_argument("--target", metavar="RAW_ITEM_ID", help="item to score (default: the user's test positive)")
    parser.add_argument("--top", type=int, default=10, help="history items to list by item-level weight")
    parser.add_argument("--out", help="PNG bar chart of the category-level attention")


def run(args: argparse.Namespace) -> int:
    from dhan.checkpoint import load_run_model
    from dhan.data.store import PreparedData
    from dhan.errors import UserError
    from dhan.explain import explain_sample
    from dhan.plots import plot_group_attention

    model, resolved, schema = load_run_model(args.run)
    data_path = args.data or resolved["data"]["path"]
    data = PreparedData.load(data_path)
    if data.schema != schema:
        raise UserError(f"{data_path}: its schema differs from the run's; use the dataset the run was trained on")
    ex = explain_sample(model, data, args.user, args.target)
    attrs = ", ".join(f"{k}={v}" for k, v in ex.target_attributes.items())
    label = "" if ex.label is None else f", label {ex.label}"
    print(f"user {ex.user}, target {ex.target} ({attrs}): p(click) = {ex.probability:.4f}{label}")
    for g in ex.groups:
        print(f"\n{g.dimension} level {g.level} attention over {g.attribute} groups:")
        for name, w in sorted(zip(g.names, g.weights, strict=True), key=lambda p: -p[1]):
            print(f"  {w:7.4f}  {name}")
    if not ex.groups:
        print(f"\n{resolved['model_name']} has no group-level (category) attention; item-level only")
    print(f"\ntop {min(args.top, len(ex.items))} history items by item-level weight:")
    names = schema.attribute_names
    for row in ex.top_items(args.top):
        extra = ", ".join(f"{n}={row[n]}" for n in names[:2])
        print(f"  {row['weight']:7.4f}  {row['item']}  ({extra})")
    if args.out:
        if not ex.groups:
            raise UserError(f"--out: {resolved['model_name']} has no category-level attention to draw; use dhan")
        g = ex.groups[0]
        title = f"user {ex.user}, target {ex.target} ({ex.target_attributes.get(g.attribute, '')})"
        out = plot_group_attention(g.names, g.weights, title, Path(args.out))
        print(f"\nwrote {out}")
    return 0
