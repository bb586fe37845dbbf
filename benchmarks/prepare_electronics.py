"""Benchmark of ``dhan prepare amazon`` on an Electronics-sized dump in the 2014 format (not a test).

Generates 1.7M review lines (strict JSON with every field of the real dump: reviewerID, asin, reviewerName,
helpful, reviewText, overall, summary, unixReviewTime, reviewTime) and 500k meta lines written with Python's
``repr`` (title, price, imUrl, related lists, salesRank, brand, categories paths, description; some titles and
descriptions with apostrophes, hence double-quoted strings, and some ``\\x`` escapes), gzip-compressed like the
downloads. Then runs ``dhan prepare amazon`` in a subprocess and reports wall time and peak RSS of the child.

    python benchmarks/prepare_electronics.py [--reviews 1700000] [--meta 500000] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = [
    "great",
    "cable",
    "works",
    "fine",
    "the",
    "and",
    "for",
    "with",
    "sound",
    "quality",
    "battery",
    "charger",
    "it's",
    "doesn't",
    "price",
    "value",
    "screen",
    "bought",
    "this",
    "product",
    "camera",
    "lens",
    "fast",
    "shipping",
    "recommend",
    "would",
    "again",
    "case",
    "fits",
    "perfectly",
    "laptop",
    "mouse",
    "keyboard",
    "wireless",
    "signal",
    "range",
    "speaker",
    "bass",
    "clear",
    "easy",
    "setup",
    "months",
    "broke",
    "warranty",
]


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))


def generate(out: Path, n_reviews: int, n_meta: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    n_items_reviewed = min(63_000, n_meta)
    n_users = max(1, n_reviews // 9)
    asins = [f"B{int(x):09d}" for x in rng.permutation(10**8)[:n_meta]]
    leaves = [
        ["Electronics", f"Group {a:02d}", f"Sub {a:02d}.{b:02d}", f"Leaf {a:02d}.{b:02d}.{c}"]
        for a in range(20)
        for b in range(10)
        for c in range(4)
    ]
    descriptions = [_text(rng, 40) for _ in range(1000)]
    titles = [_text(rng, 6) for _ in range(5000)]
    meta_path = out / "meta_Electronics.json.gz"
    with gzip.open(meta_path, "wt", compresslevel=1) as fh:
        for k, asin in enumerate(asins):
            leaf = leaves[int(rng.integers(len(leaves)))]
            depth = int(rng.integers(2, 5))
            rec: dict[str, object] = {"asin": asin}
            rec["description"] = descriptions[k % 1000] + (" it's the best" if k % 2 else "") if k % 5 < 2 else None
            rec["title"] = ("Men's " if k % 7 == 0 else "") + titles[k % 5000]
            if k % 4:
                rec["price"] = round(float(rng.lognormal(3, 1)), 2)
            rec["imUrl"] = f"http://ecx.images-amazon.com/images/I/{asin}.jpg"
            rec["related"] = {
                "also_bought": [asins[int(j)] for j in rng.integers(0, n_meta, size=int(rng.integers(0, 60)))],
                "also_viewed": [asins[int(j)] for j in rng.integers(0, n_meta, size=int(rng.integers(0, 20)))],
                "bought_together": [asins[int(j)] for j in rng.integers(0, n_meta, size=int(rng.integers(0, 3)))],
            }
            rec["salesRank"] = {"Electronics": int(rng.integers(1, 10**6))}
            if k % 3:
                rec["brand"] = f"Brand{int(rng.zipf(1.5)) % 5000}"
            rec["categories"] = [leaf[:depth]] + ([["Electronics", "Accessories"]] if k % 6 == 0 else [])
            if rec["description"] is None:
                del rec["description"]
            line = repr(rec)
            if k % 50 == 0:  # the Python 2 dumps escape non-ASCII bytes
                line = line.replace("'title': '", "'title': 'Caf\\xc3\\xa9 ", 1)
            fh.write(line + "\n")
    reviews_path = out / "reviews_Electronics_5.json.gz"
    users = rng.integers(0, n_users, size=n_reviews)
    items = np.minimum(rng.zipf(1.3, size=n_reviews) - 1, n_items_reviewed - 1)
    times = rng.integers(1_000_000_000, 1_406_000_000, size=n_reviews)
    texts = [_text(rng, 110) for _ in range(500)]
    with gzip.open(reviews_path, "wt", compresslevel=1) as fh:
        for k in range(n_reviews):
            t = int(times[k])
            fh.write(
                json.dumps(
                    {
                        "reviewerID": f"A{int(users[k]):013d}",
                        "asin": asins[int(items[k])],
                        "reviewerName": "J. Doe",
                        "helpful": [int(k % 5), int(k % 7)],
                        "reviewText": texts[k % 500],
                        "overall": float(1 + k % 5),
                        "summary": "Good value for the money",
                        "unixReviewTime": t,
                        "reviewTime": f"{1 + t % 12:02d} {1 + t % 28:02d}, {1970 + t // 31_557_600}",
                    }
                )
                + "\n"
            )
    return reviews_path, meta_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reviews", type=int, default=1_700_000)
    ap.add_argument("--meta", type=int, default=500_000)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated dump here (default: temp dir)")
    ap.add_argument("extra", nargs="*", help="extra flags for dhan prepare amazon (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        reviews, meta = generate(work, args.reviews, args.meta)
        gen_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "dhan", "prepare", "amazon", "--reviews", str(reviews), "--meta", str(meta)]
        cmd += ["--out", str(work / "prepared"), *args.extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        schema = json.loads((work / "prepared" / "schema.json").read_text())
        figures = {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "review_lines": args.reviews,
            "meta_lines": args.meta,
            "reviews_gz_mb": round(reviews.stat().st_size / 2**20, 1),
            "meta_gz_mb": round(meta.stat().st_size / 2**20, 1),
            "generate_s": round(gen_s, 1),
            "prepare_wall_s": round(wall, 1),
            "prepare_peak_rss_mb": round(peak_kib / 1024, 0),
            "users": schema["num_users"],
            "items": schema["num_items"],
            "categories": schema["num_categories"],
            "splits": schema["splits"],
        }
    print(proc.stdout)
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
