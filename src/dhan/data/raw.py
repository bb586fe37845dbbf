"""What every source reader hands to :mod:`dhan.data.prepare`: raw-id tables plus the bookkeeping of bad lines.

The readers (Amazon dumps, user tables, the synthetic generator) differ only in how they turn files into two
tables; everything after that (filters, ids, samples, negatives) is shared, so the leak-free guarantees are proved
once. Raw ids stay strings here; integer ids are assigned later, deterministically, from the sorted raw ids.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from dhan.errors import UserError

MAX_EXAMPLE_LINES = 5  # first line numbers of skipped lines kept per file in schema.json
CHUNK_BYTES = 1 << 24  # 16 MiB of text per decode call: large enough to amortise, small enough to stay flat

# column names of RawLog.items; any other column is a user-defined dimension (one level, string values)
ITEM_COL = "item"
CATEGORY_PATH_COL = "category_path"  # List(String): a category path, coarse to fine, as in the Amazon dumps
BRAND_COL = "brand"
PRICE_COL = "price"  # Float64


@dataclass
class RawLog:
    """Interactions and item attributes with raw ids, in file order (file order breaks ties in time)."""

    interactions: pl.DataFrame  # user: String, item: String, time: Int64, in file order
    items: pl.DataFrame  # item: String (unique) plus optional category_path / brand / price / other columns
    source: str  # "amazon", "table" or "synthetic"
    sources: list[dict[str, Any]] = field(default_factory=list)  # {"path", "role", "sha256", ...}
    skipped_lines: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # source-specific keys for schema.json (formats, generator)
    numeric_ids: bool = False  # a column of all-integer raw ids sorts as integers (table sources), else as text


class LineErrors:
    """Counts malformed input lines per file; in strict mode the first one is a :class:`UserError`."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, path: Path | str, line: int, reason: str) -> None:
        if self.strict:
            raise UserError(f"{path}:{line}: {reason} (without --strict such lines are skipped and counted)")
        entry = self.files.setdefault(str(path), {"count": 0, "first_lines": [], "first_reasons": []})
        entry["count"] += 1
        if len(entry["first_lines"]) < MAX_EXAMPLE_LINES:
            entry["first_lines"].append(line)
            entry["first_reasons"].append(reason)

    @property
    def total(self) -> int:
        return sum(int(e["count"]) for e in self.files.values())

    def to_info(self) -> dict[str, Any]:
        return {"count": self.total, "files": self.files}


def first_line(exc: BaseException) -> str:
    """One line of an exception's message for a :class:`UserError` (never empty, never several lines)."""
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def check_file(path: Path, flag: str) -> Path:
    if not path.exists():
        raise UserError(f"{path}: no such file (given with {flag})")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file (given with {flag})")
    return path


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def iter_line_chunks(path: Path, desc: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield ``(chunk, first_line_number)``: blocks of whole lines of a plain or gzip file (detected by magic).

    Decoding a block at a time keeps the per-line Python overhead off the fast path; line numbers are kept so
    that a bad line can still be reported as ``FILE:LINE``.
    """
    total = path.stat().st_size
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        tail = b""
        line_no = 1
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, leave=False) as bar:
            while True:
                try:
                    block = stream.read(chunk_bytes)
                except (OSError, EOFError, zlib.error) as exc:
                    raise UserError(f"{path}: cannot decompress ({exc}); is the .gz file complete?") from None
                if not block:
                    break
                buf = tail + block
                cut = buf.rfind(b"\n")
                if cut < 0:
                    tail = buf
                    continue
                chunk, tail = buf[: cut + 1], buf[cut + 1 :]
                yield chunk, line_no
                line_no += chunk.count(b"\n")
                bar.update(raw.tell() - bar.n)
            if tail:
                yield tail, line_no
