"""Readers for the McAuley Amazon dumps (2014 and 2018 releases), plain or gzip.

Reviews are strict JSON lines in both releases; only ``reviewerID``, ``asin`` and ``unixReviewTime`` are decoded,
by msgspec into a typed struct, a 16 MiB block at a time (``decode_lines``). A block with any bad line is decoded
again line by line so that each bad line is skipped and reported as ``FILE:LINE``.

2014 meta lines are Python dict literals (``{'asin': '0001', 'categories': [['Toys & Games', 'Dolls']], ...}``),
2018 meta lines are JSON (``category`` is one path, ``price`` is text such as ``"$12.99"``). The authors ran
``eval`` on every line; ``ast.literal_eval`` is safe but costs ~260 µs for a typical 1.2 kB line (131 s for
Electronics' 500k lines), so a literal is first rewritten into JSON and decoded by msgspec, which skips the
fields it does not need in C:

1. a line with neither ``"`` nor ``\\`` has only single-quoted strings without escapes, so swapping every ``'`` for
   ``"`` is an exact translation of its string literals (~3 µs);
2. otherwise a regex finds the string literals left to right (a quote outside a string always opens one) and
   rewrites each into JSON; a literal with a backslash escape is evaluated alone with ``ast.literal_eval``;
3. if the result is not valid JSON of the expected shape (``None``, ``True``, tuples, ``u''`` prefixes, ...), the
   whole line goes through ``ast.literal_eval``. Every fast path either gives literal_eval's answer or fails into
   this one, so the fast path never changes what is read.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import polars as pl

from dhan.data.raw import (
    BRAND_COL,
    CATEGORY_PATH_COL,
    ITEM_COL,
    PRICE_COL,
    LineErrors,
    RawLog,
    check_file,
    iter_line_chunks,
    sha256_of,
)
from dhan.errors import UserError

_INT64 = msgspec.Meta(ge=-(2**63), le=2**63 - 1)  # a larger time cannot be stored: the line is malformed


class _Review(msgspec.Struct):
    reviewerID: str
    asin: str
    unixReviewTime: Annotated[int, _INT64]


class _Meta(msgspec.Struct):
    """The fields of a meta line that dhan uses, in either release; every other field is skipped unread."""

    asin: str
    categories: list[list[str]] | None = None  # 2014: several paths, coarse to fine
    category: list[str] | None = None  # 2018: one path
    brand: str | None = None
    price: float | str | None = None  # 2014: a number; 2018: text like "$12.99"


_REVIEW_DECODER = msgspec.json.Decoder(_Review)
_META_DECODER = msgspec.json.Decoder(_Meta)
# group 1: a run of text outside strings and of single-quoted strings without `"` or `\` (swapping quotes is exact);
# group 2: any other string literal, converted on its own. The alternatives start with different characters, so
# the scan is linear and finds string boundaries exactly as Python's tokenizer does on a valid literal.
_LITERAL_PIECE = re.compile(r"((?:[^'\"]|'[^'\"\\\n]*')+)|('(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")
_PATH_SEP = "\x1f"  # ASCII unit separator: never part of a category name
_PRICE_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class MetaRecord:
    asin: str
    path: list[str] | None
    brand: str | None
    price: float | None


# ----------------------------------------------------------------------------------------------- reviews


def read_reviews(path: Path, errors: LineErrors) -> pl.DataFrame:
    """All well-formed review lines of one file as ``user, item, time`` in file order."""
    frames = []
    for chunk, first_line in iter_line_chunks(path, desc=f"reviews {path.name}"):
        try:
            recs = _REVIEW_DECODER.decode_lines(chunk)
            if any(not r.reviewerID or not r.asin for r in recs):
                raise msgspec.ValidationError("empty id")
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            recs = _decode_reviews_slowly(chunk, first_line, path, errors)
        frames.append(
            pl.DataFrame(
                {
                    "user": [r.reviewerID for r in recs],
                    "item": [r.asin for r in recs],
                    "time": [r.unixReviewTime for r in recs],
                },
                schema={"user": pl.String, "item": pl.String, "time": pl.Int64},
            )
        )
    if not frames:
        return pl.DataFrame(schema={"user": pl.String, "item": pl.String, "time": pl.Int64})
    return pl.concat(frames, rechunk=True)


def _decode_reviews_slowly(chunk: bytes, first_line: int, path: Path, errors: LineErrors) -> list[_Review]:
    out = []
    for i, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue
        try:
            rec = _REVIEW_DECODER.decode(line)
        except msgspec.ValidationError as exc:
            errors.add(path, first_line + i, _review_problem(str(exc)))
            continue
        except (msgspec.DecodeError, RecursionError):
            errors.add(path, first_line + i, "not a valid JSON object")
            continue
        if not rec.reviewerID or not rec.asin:
            errors.add(path, first_line + i, "empty reviewerID or asin")
            continue
        out.append(rec)
    return out


def _review_problem(msg: str) -> str:
    if "unixReviewTime" in msg:
        return f"unixReviewTime is missing or not an integer ({msg})"
    return msg


# ------------------------------------------------------------------------------------------------- meta


def read_meta(path: Path, errors: LineErrors, category_path: str = "last") -> tuple[list[MetaRecord], dict[str, int]]:
    """Meta records of one file and how many lines were in each format (``python-literal`` / ``json``)."""
    records: list[MetaRecord] = []
    formats = {"python-literal": 0, "json": 0}
    for chunk, first_line in iter_line_chunks(path, desc=f"meta {path.name}"):
        for i, line in enumerate(chunk.split(b"\n")):
            stripped = line.strip()
            if not stripped:
                continue
            is_json = stripped.startswith(b'{"')
            rec, problem = _parse_meta_line(stripped, is_json, category_path)
            if rec is None:
                errors.add(path, first_line + i, problem)
                continue
            formats["json" if is_json else "python-literal"] += 1
            records.append(rec)
    return records, formats


def _parse_meta_line(line: bytes, is_json: bool, category_path: str) -> tuple[MetaRecord | None, str]:
    if is_json:
        try:
            return _record(_META_DECODER.decode(line), category_path), ""
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            try:
                value: Any = json.loads(line)
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None, "not a valid JSON object"
            return _record_from_dict(value, category_path)
    if b'"' not in line and b"\\" not in line:
        try:
            return _record(_META_DECODER.decode(line.replace(b"'", b'"')), category_path), ""
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        return _record(_META_DECODER.decode(_LITERAL_PIECE.sub(_json_piece, text)), category_path), ""
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, SyntaxError, RecursionError, MemoryError):
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, "not a Python dict literal or JSON object"
    return _record_from_dict(value, category_path)


def _json_piece(m: re.Match[str]) -> str:
    run = m.group(1)
    if run is not None:
        return run.replace("'", '"')
    literal = m.group(2)
    if "\\" in literal:  # escapes: let Python decode this one literal
        return json.dumps(ast.literal_eval(literal))
    if literal[0] == '"':
        return literal
    return '"' + literal[1:-1].replace('"', '\\"') + '"'


def _clean(text: str) -> str:
    """``text`` as storable UTF-8: lone surrogates (``"\\ud800"`` escapes) become ``?``, the path separator a space."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace(_PATH_SEP, " ") if _PATH_SEP in text else text


def _record(meta: _Meta, category_path: str) -> MetaRecord:
    if not meta.asin:
        raise msgspec.ValidationError("empty asin")
    path: list[str] | None = None
    if meta.categories:
        chosen = meta.categories[-1] if category_path == "last" else meta.categories[0]
        path = [_clean(c) for c in chosen if c] or None
    elif meta.category:
        path = [_clean(c) for c in meta.category if c] or None
    return MetaRecord(_clean(meta.asin), path, _clean(meta.brand) if meta.brand else None, _price(meta.price))


def _record_from_dict(value: Any, category_path: str) -> tuple[MetaRecord | None, str]:
    """The slow, lenient path: a dict from ``ast.literal_eval`` or ``json.loads`` with unexpected value types."""
    if not isinstance(value, dict):
        return None, "not a dict"
    asin = value.get("asin")
    if not isinstance(asin, str) or not asin:
        return None, "missing asin"
    cats = value.get("categories")
    path: list[str] | None = None
    if isinstance(cats, list | tuple) and cats:
        chosen = cats[-1] if category_path == "last" else cats[0]
        if isinstance(chosen, list | tuple):
            path = [_clean(str(c)) for c in chosen if c] or None
    elif isinstance(value.get("category"), list | tuple):
        path = [_clean(str(c)) for c in value["category"] if c] or None
    brand = value.get("brand")
    price = value.get("price")
    return (
        MetaRecord(
            _clean(asin),
            path,
            _clean(str(brand)) if brand else None,
            _price(price if isinstance(price, int | float | str) and not isinstance(price, bool) else None),
        ),
        "",
    )


def _price(value: float | str | None) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            m = _PRICE_NUMBER.search(value)
            if m is None:
                return None
            value = float(m.group(0).replace(",", ""))
        price = float(value)
    except (OverflowError, ValueError):  # an integer literal with hundreds of digits
        return None
    return price if math.isfinite(price) and price >= 0 else None


# ---------------------------------------------------------------------------------------------- sources


def department_name(path: Path) -> str:
    """A readable department from a dump's file name: ``reviews_Video_Games_5.json.gz`` -> ``Video Games``."""
    name = path.name
    for suffix in (".gz", ".json", ".jsonl", ".txt"):
        name = name.removesuffix(suffix)
    for prefix in ("reviews_", "meta_"):
        name = name.removeprefix(prefix)
    name = re.sub(r"_5$", "", name)
    return name.replace("_", " ").strip() or path.name


def read_amazon(
    reviews: list[Path],
    meta: list[Path],
    *,
    strict: bool = False,
    category_from: str = "meta",
    category_path: str = "last",
) -> RawLog:
    """Read review/meta pairs into one :class:`RawLog` (several departments make one dataset)."""
    if not reviews:
        raise UserError("give at least one --reviews FILE")
    if meta and len(meta) != len(reviews):
        raise UserError(
            f"got {len(reviews)} --reviews and {len(meta)} --meta files; give them in pairs (or no --meta at all)"
        )
    for p in reviews:
        check_file(p, "--reviews")
    for p in meta:
        check_file(p, "--meta")
    errors = LineErrors(strict)
    frames, metas, sources = [], [], []
    formats: dict[str, dict[str, int]] = {}
    for k, rpath in enumerate(reviews):
        df = read_reviews(rpath, errors)
        dept = department_name(rpath)
        frames.append(df.with_columns(pl.lit(dept).alias("_dept")))
        sources.append({"path": str(rpath), "role": "reviews", "department": dept, "sha256": sha256_of(rpath)})
        if meta:
            mpath = meta[k]
            recs, fmt = read_meta(mpath, errors, category_path)
            formats[str(mpath)] = fmt
            metas.append(recs)
            sources.append({"path": str(mpath), "role": "meta", "department": dept, "sha256": sha256_of(mpath)})
    inter = pl.concat(frames)
    if inter.height == 0:
        raise UserError(
            f"no review lines with reviewerID, asin and unixReviewTime in {', '.join(map(str, reviews))}"
            + (f" ({errors.total} malformed lines skipped)" if errors.total else "")
        )
    # an item reviewed in several departments belongs to the first one it appears in
    dept_of_item = inter.group_by("item", maintain_order=True).agg(pl.col("_dept").first())
    seen: set[str] = set()
    asins: list[str] = []
    paths: list[str | None] = []  # joined by _PATH_SEP: one string per item builds the column far faster
    brands: list[str | None] = []
    prices: list[float | None] = []
    for recs in metas:
        for r in recs:
            if r.asin in seen:  # the first meta line of an asin wins
                continue
            seen.add(r.asin)
            asins.append(r.asin)
            paths.append(_PATH_SEP.join(r.path) if r.path else None)
            brands.append(r.brand)
            prices.append(r.price)
    items = pl.DataFrame(
        {ITEM_COL: asins, CATEGORY_PATH_COL: paths, BRAND_COL: brands, PRICE_COL: prices},
        schema={ITEM_COL: pl.String, CATEGORY_PATH_COL: pl.String, BRAND_COL: pl.String, PRICE_COL: pl.Float64},
    ).with_columns(pl.col(CATEGORY_PATH_COL).str.split(_PATH_SEP))
    items = dept_of_item.join(items, on=ITEM_COL, how="left")
    if category_from == "source":
        items = items.with_columns(pl.concat_list(pl.col("_dept")).alias(CATEGORY_PATH_COL))
    elif category_from != "meta":
        raise UserError(f"--category-from must be meta or source; got {category_from!r}")
    items = items.drop("_dept")
    drop = [c for c in (BRAND_COL, PRICE_COL, CATEGORY_PATH_COL) if items[c].null_count() == items.height]
    if category_from == "source":
        drop = [c for c in drop if c != CATEGORY_PATH_COL]
    return RawLog(
        interactions=inter.drop("_dept"),
        items=items.drop(drop),
        source="amazon",
        sources=sources,
        skipped_lines=errors.to_info(),
        info={"meta_formats": formats, "category_from": category_from, "category_path": category_path},
    )
