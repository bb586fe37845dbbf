"""Independent check of ``dhan prepare`` on real Amazon 2014 data (not a test; needs ../shared/data).

Turns the ReChorus copy of Amazon Beauty 5-core (``train.csv`` + ``item_meta.csv``, see its SOURCE.md) back into
genuine 2014-format dumps (reviews: JSON lines with reviewerID/asin/unixReviewTime and the other review fields;
meta: Python dict literals written by ``repr`` with a ``categories`` path built from the category id; category 0
= missing, so no ``categories`` key), runs ``dhan prepare amazon`` on them and ``dhan prepare table`` on the CSVs
directly, and compares users, items, categories, interactions and sample counts with a count done here with plain
polars, which shares no code with dhan.

    python benchmarks/check_real_amazon.py [--data ../shared/data/amazon2014-beauty-rechorus] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014-beauty-rechorus"


def write_dumps(src: Path, out: Path) -> tuple[Path, Path]:
    train = pl.read_csv(src / "train.csv", separator="\t")
    meta = pl.read_csv(src / "item_meta.csv", separator="\t")
    reviews = out / "reviews_Beauty_5.json"
    with open(reviews, "w") as fh:
        for u, i, t in train.select("user_id", "item_id", "time").iter_rows():
            rec = {"reviewerID": f"R{u:06d}", "asin": f"B{i:09d}", "reviewerName": "x", "helpful": [0, 0],
                   "reviewText": "fine", "overall": 5.0, "summary": "ok", "unixReviewTime": int(t)}  # fmt: skip
            fh.write(json.dumps(rec) + "\n")
    meta_path = out / "meta_Beauty.json"
    with open(meta_path, "w") as fh:
        for i, cat, comp in meta.select("item_id", "i_category", "r_complement").iter_rows():
            rec: dict[str, object] = {"asin": f"B{i:09d}", "title": f"Beauty item {i}'s title"}
            rec["related"] = {"also_bought": [f"B{int(x):09d}" for x in json.loads(comp)]}
            if cat != 0:
                rec["categories"] = [["Beauty", "Level 1", f"Category {cat:02d}"]]
            fh.write(repr(rec) + "\n")
    return reviews, meta_path


def independent_counts(src: Path, recipe: str) -> dict[str, object]:
    train = pl.read_csv(src / "train.csv", separator="\t").unique(["user_id", "item_id", "time"], maintain_order=True)
    meta = pl.read_csv(src / "item_meta.csv", separator="\t")
    n = train.group_by("user_id").len()["len"]
    if recipe == "dien":
        n = n.filter(n >= 5)
        train = train.filter(
            pl.col("user_id").is_in(train.group_by("user_id").len().filter(pl.col("len") >= 5)["user_id"].implode())
        )
        users = n.len()
        splits = {"total_samples": 2 * users}
    else:
        users = n.len()
        splits = {
            "train": 2 * int((n - 3).clip(lower_bound=0).sum()),
            "valid": 2 * int((n >= 3).sum()),
            "test": 2 * int((n >= 2).sum()),
        }
    items = train["item_id"].unique()
    cats = meta.filter(pl.col("item_id").is_in(items.implode()) & (pl.col("i_category") != 0))["i_category"]
    return {
        "users": users,
        "items": items.len(),
        "categories": cats.n_unique(),
        "interactions": train.height,
        "splits": splits,
    }


def dhan_counts(out: Path, recipe: str) -> dict[str, object]:
    s = json.loads((out / "schema.json").read_text())
    splits = s["splits"] if recipe == "din" else {"total_samples": sum(s["splits"].values())}
    return {
        "users": s["num_users"],
        "items": s["num_items"],
        "categories": s["num_categories"],
        "interactions": s["num_interactions"],
        "splits": splits,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.data / "train.csv").is_file():
        print(f"{args.data}: no train.csv here; point --data at amazon2014-beauty-rechorus", file=sys.stderr)
        return 2
    results = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reviews, meta = write_dumps(args.data, work)
        runs = {
            "amazon din": ["amazon", "--reviews", str(reviews), "--meta", str(meta)],
            "amazon dien": ["amazon", "--reviews", str(reviews), "--meta", str(meta), "--recipe", "dien"],
            "table din": ["table", "--interactions", str(args.data / "train.csv"), "--items",
                          str(args.data / "item_meta.csv"), "--attribute", "category=i_category",
                          "--missing-value", "0"],
        }  # fmt: skip
        for name, flags in runs.items():
            recipe = "dien" if "dien" in name else "din"
            out = work / name.replace(" ", "_")
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "dhan", "prepare", *flags, "--out", str(out)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            got, want = dhan_counts(out, recipe), independent_counts(args.data, recipe)
            match = got == want
            ok &= match
            results.append({"run": name, "seconds": round(wall, 1), "dhan": got, "independent": want, "match": match})
    for r in results:
        print(f"{r['run']:<12} {'MATCH' if r['match'] else 'MISMATCH'} ({r['seconds']} s)")
        print(f"  dhan        {r['dhan']}")
        print(f"  independent {r['independent']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
