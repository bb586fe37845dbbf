"""``dhan inspect DIR``: samples as JSON lines with raw ids, histories truncated as the loader does."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dhan.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="a dataset directory made by `dhan prepare`")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--limit", type=int, default=10, help="samples to print (0 = all)")
    parser.add_argument("--offset", type=int, default=0, help="first sample to print")


def run(args: argparse.Namespace) -> int:
    if args.limit < 0 or args.offset < 0:
        raise UserError("--limit and --offset must be >= 0")
    for row in inspect_rows(args.data, args.split, args.limit, args.offset):
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def inspect_rows(data_dir: Path, split: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    from dhan.data.store import PreparedData

    data = PreparedData.load(data_dir)
    table = data.split(split)
    stop = len(table) if limit == 0 else min(len(table), offset + limit)
    max_len = data.schema.max_len
    cat_col = data.schema.attribute_index("category") if "category" in data.schema.attribute_names else None
    cat_names = data.attribute_values.get("category", [])
    rows = []
    for s in range(offset, stop):
        u, p = int(table.user[s]), int(table.position[s])
        start = int(data.offsets[u]) + max(0, p - max_len)
        hist = data.hist_item[start : int(data.offsets[u]) + p]
        row: dict[str, Any] = {
            "user": data.user_raw_ids[u],
            "history": [data.item_raw_ids[i] for i in hist],
            "target": data.item_raw_ids[int(table.target[s])],
            "label": int(table.label[s]),
        }
        if cat_col is not None:
            row["history_categories"] = [cat_names[int(data.item_attrs[i, cat_col])] for i in hist]
            row["target_category"] = cat_names[int(data.item_attrs[int(table.target[s]), cat_col])]
        rows.append(row)
    return rows
