"""``dhan prepare {amazon,table,synthetic}``: raw logs to a prepared dataset directory (see docs/data.md)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from dhan.errors import UserError

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output dataset directory (replaced atomically)")
    g = p.add_argument_group("recipe and split")
    g.add_argument("--recipe", choices=("din", "dien"), default="din", help="sample recipe (paper section 3.1 / 3.2)")
    g.add_argument(
        "--split",
        choices=("leave-last", "paper"),
        default="leave-last",
        help="din: leave-last = last target to test, second-to-last to valid, rest train; "
        "paper = the authors' train/test only (no honest model selection). dien: paper = no valid users",
    )
    g.add_argument("--valid-fraction", type=float, default=None, help="dien: share of users in valid (0.1)")
    g.add_argument("--test-fraction", type=float, default=None, help="dien: share of users in test (0.1)")
    g.add_argument("--max-len", type=int, default=100, help="history length the loader keeps (most recent)")
    g.add_argument("--negatives", choices=("uniform", "popularity"), default="uniform", help="negative item draw")
    g.add_argument("--seed", type=int, default=1234, help="seed of every random choice (sampling, negatives, split)")
    f = p.add_argument_group("filters")
    f.add_argument("--category-level", type=int, default=-1, help="index into the category path (-1 = leaf)")
    f.add_argument("--min-category-items", type=int, default=0, help="drop items of smaller categories (paper: 300)")
    f.add_argument("--min-user-interactions", type=int, default=None, help="drop users with fewer (dien: 5, din: 1)")
    f.add_argument("--sample-users", type=float, default=1.0, help="seeded share of users to keep")
    f.add_argument("--sample-reviews", type=float, default=1.0, help="seeded share of interaction rows to keep")
    f.add_argument("--price-bands", type=int, default=5, help="quantile bands of the price attribute")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed line (FILE:LINE, exit 2)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(parser))
    sub.required = True
    a = sub.add_parser("amazon", help="McAuley Amazon dumps (2014 or 2018; plain or .gz)")
    a.add_argument("--reviews", type=Path, action="append", required=True, help="reviews file (repeatable)")
    a.add_argument("--meta", type=Path, action="append", default=[], help="meta file, one per --reviews")
    a.add_argument(
        "--category-from",
        choices=("meta", "source"),
        default="meta",
        help="meta: the category path of the meta lines; source: each pair's department (Six-Category)",
    )
    a.add_argument(
        "--category-path",
        choices=("last", "first"),
        default="last",
        help="which of a 2014 item's category paths (DIN code: last; DIEN code: first)",
    )
    _common(a)
    t = sub.add_parser("table", help="your own logs: CSV, TSV or Parquet")
    t.add_argument("--interactions", type=Path, required=True, help="one row per behaviour")
    t.add_argument("--items", type=Path, default=None, help="one row per item with attribute columns (optional)")
    t.add_argument("--user-col", default="user_id")
    t.add_argument("--item-col", default="item_id")
    t.add_argument("--time-col", default="time", help="integer timestamps (or a Parquet date/datetime column)")
    t.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="DIM=COLUMN",
        help="item attribute: category=COL, brand=COL, price=COL or NAME=COL (repeatable)",
    )
    t.add_argument("--category-sep", default=None, help="separator of a category path column, e.g. ' > '")
    t.add_argument(
        "--missing-value", action="append", default=[], help="attribute value that means unknown, e.g. 0 (repeatable)"
    )
    t.add_argument("--sep", default=None, help="field separator of CSV/TSV files (default: by extension / sniffed)")
    _common(t)
    s = sub.add_parser("synthetic", help="the embedded synthetic dataset with hierarchical interests")
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--items", type=int, default=3000)
    _common(s)


def run(args: argparse.Namespace) -> int:
    try:
        summary = prepare_from_args(args)
    except MemoryError:
        raise UserError(
            "out of memory while preparing the dataset; sample it (--sample-users / --sample-reviews) "
            "or use a machine with more memory"
        ) from None
    print(format_summary(summary))
    return 0


def prepare_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Read the source named by ``args``, build and save the dataset; return the summary."""
    from dhan.data.prepare import PrepareOptions, prepare

    start = time.perf_counter()
    opts = PrepareOptions(
        recipe=args.recipe,
        split=args.split,
        max_len=args.max_len,
        category_level=args.category_level,
        min_category_items=args.min_category_items,
        min_user_interactions=args.min_user_interactions,
        sample_users=args.sample_users,
        sample_reviews=args.sample_reviews,
        seed=args.seed,
        negatives=args.negatives,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        price_bands=args.price_bands,
    ).resolved()
    if args.source == "amazon":
        from dhan.data.amazon import read_amazon

        raw = read_amazon(
            args.reviews,
            args.meta,
            strict=args.strict,
            category_from=args.category_from,
            category_path=args.category_path,
        )
    elif args.source == "table":
        from dhan.data.table import parse_attribute_flags, read_table

        raw = read_table(
            args.interactions,
            args.items,
            user_col=args.user_col,
            item_col=args.item_col,
            time_col=args.time_col,
            attributes=parse_attribute_flags(args.attribute),
            category_sep=args.category_sep,
            sep=args.sep,
            strict=args.strict,
            missing_values=tuple(args.missing_value),
        )
    elif args.source == "synthetic":
        from dhan.data.synthetic import GeneratorParams, generate

        raw = generate(GeneratorParams(users=args.users, items=args.items, seed=args.seed))
    else:  # argparse restricts the choices
        raise UserError(f"unknown source {args.source!r}")
    data, summary = prepare(raw, opts)
    out = data.save(args.out)
    summary["out"] = str(out)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    sk = s["skipped_lines"]
    lines = [
        f"prepared {s['recipe']} dataset in {s['out']} ({s['seconds']} s)",
        f"  users {s['users']:,}  items {s['items']:,}  interactions {s['interactions']:,}  "
        f"categories {s['num_categories']:,}",
        "  attributes " + (", ".join(f"{k} {v:,}" for k, v in s["attributes"].items()) or "none"),
        "  samples " + ", ".join(f"{k} {v:,}" for k, v in s["splits"].items()),
        f"  duplicates dropped {s['duplicates_dropped']:,}  skipped lines {sk['count']:,}",
    ]
    for path, entry in sk.get("files", {}).items():
        lines.append(f"    {path}: {entry['count']:,} skipped, first at lines {entry['first_lines']}")
    dropped = {k: v for k, v in s["counts"].items() if "dropped" in k or "after" in k}
    if dropped:
        lines.append("  filters " + json.dumps(dropped))
    return "\n".join(lines)
