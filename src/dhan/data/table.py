"""Reader for a user's own logs: interactions (and optionally items) as CSV, TSV or Parquet.

Columns are named by flags; every attribute is ``DIMENSION=COLUMN``: ``category`` (a category path when a
separator is given, which yields several levels), ``brand``, ``price`` (numeric; becomes quantile bands) or any
other name (a one-level dimension of that name). Rows with a missing user, item or time, or a time that is not an
integer, are skipped and counted like the malformed lines of the Amazon dumps (line = row + 2 for a file with a
header, the row number for Parquet).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dhan.data.raw import (
    BRAND_COL,
    CATEGORY_PATH_COL,
    ITEM_COL,
    PRICE_COL,
    LineErrors,
    RawLog,
    check_file,
    first_line,
    sha256_of,
)
from dhan.errors import UserError

RESERVED_DIMENSIONS = {"category", "brand", "price"}


def parse_attribute_flags(specs: list[str]) -> dict[str, str]:
    """``["category=cat_path", "brand=maker"]`` -> ``{"category": "cat_path", "brand": "maker"}``."""
    out: dict[str, str] = {}
    for spec in specs:
        dim, sep, col = spec.partition("=")
        dim, col = dim.strip(), col.strip()
        if not sep or not dim or not col:
            raise UserError(f"--attribute {spec!r}: expected DIMENSION=COLUMN, e.g. category=category_id")
        if not dim.isidentifier() or dim in {"item", "category_parent", "category_grandparent", "price_band"}:
            raise UserError(f"--attribute {spec!r}: {dim!r} is not a usable dimension name")
        if dim in out:
            raise UserError(f"--attribute {dim}=... given twice")
        out[dim] = col
    return out


def _separator(path: Path, sep: str | None) -> str:
    if sep is not None:
        sep = "\t" if sep in ("\\t", "tab") else sep
        if len(sep.encode("utf-8")) != 1 or sep in ('"', "\n", "\r"):
            raise UserError(f"--sep {sep!r}: the field separator must be one character (one byte), e.g. , or tab")
        return sep
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with open(path, "rb") as fh:
        head = fh.readline()
    return "\t" if head.count(b"\t") > head.count(b",") else ","


def read_frame(path: Path, flag: str, sep: str | None = None) -> tuple[pl.DataFrame, int]:
    """The file as all-string columns (Parquet keeps its types) and the line number of its first row."""
    check_file(path, flag)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    separator = "," if parquet else _separator(path, sep)
    try:
        if parquet:
            df = _read_parquet(path)
        else:
            df = pl.read_csv(path, separator=separator, infer_schema=False, truncate_ragged_lines=True)
    except (OSError, ValueError, pl.exceptions.PolarsError, pa.ArrowException, pl.exceptions.PanicException) as exc:
        kind = "Parquet" if parquet else "CSV/TSV"
        raise UserError(f"{path}: cannot read it as {kind} ({first_line(exc)})") from None
    if parquet:
        return df, 1
    if df.height == 0:
        raise UserError(f"{path}: no data rows (given with {flag})")
    return df, 2


def _read_parquet(path: Path) -> pl.DataFrame:
    """A user's Parquet file, read by pyarrow: a damaged file is an error here, where polars' reader can panic."""
    table = pq.read_table(path)
    names = table.column_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{path}: columns {dup} appear more than once; give every column a distinct name")
    for name, column in zip(names, table.columns, strict=True):
        try:
            column.validate(full=True)  # e.g. string cells that are not UTF-8: polars would panic on them later
        except pa.ArrowException as exc:
            raise UserError(f"{path}: column {name!r} is damaged ({first_line(exc)}); write the file again") from None
    # without the file's key/value metadata: a damaged (non-UTF-8) entry there makes polars' import panic
    df = pl.from_arrow(pa.Table.from_arrays(table.columns, names=names))
    assert isinstance(df, pl.DataFrame)
    return df


def _need(df: pl.DataFrame, col: str, path: Path, flag: str) -> None:
    if col not in df.columns:
        raise UserError(f"{path}: no column {col!r} (choose it with {flag}); columns are {df.columns}")
    dtype = df.schema[col]
    if dtype.is_nested() or isinstance(dtype, pl.Object | pl.Duration | pl.Time):
        raise UserError(f"{path}: column {col!r} has type {dtype}; expected text or numbers (given with {flag})")


def _as_text(col: pl.Series) -> pl.Series:
    """Text of a checked scalar column; binary cells that are not UTF-8 become null (counted as missing)."""
    if col.dtype == pl.Binary:
        col = pl.Series(col.name, [_utf8_or_none(b) for b in col.to_list()], dtype=pl.String)
    return col.cast(pl.String, strict=False).str.strip_chars()


def _utf8_or_none(b: bytes | None) -> str | None:
    try:
        return None if b is None else b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _as_int_time(col: pl.Series) -> pl.Series:
    if col.dtype in (pl.Date, pl.Datetime) or isinstance(col.dtype, pl.Datetime):
        return col.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Int64)
    if col.dtype.is_integer():
        return col.cast(pl.Int64, strict=False)  # a UInt64 above 2**63 - 1 becomes null: not a usable time
    text = _as_text(col)
    return text.cast(pl.Int64, strict=False)


def read_table(
    interactions: Path,
    items: Path | None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "time",
    attributes: dict[str, str] | None = None,
    category_sep: str | None = None,
    sep: str | None = None,
    strict: bool = False,
    missing_values: tuple[str, ...] = (),
) -> RawLog:
    """Read the logs; attribute cells that are empty or one of ``missing_values`` (e.g. ``0``) become unknown."""
    attributes = attributes or {}
    errors = LineErrors(strict)
    inter, first = read_frame(interactions, "--interactions", sep)
    for col, flag in ((user_col, "--user-col"), (item_col, "--item-col"), (time_col, "--time-col")):
        _need(inter, col, interactions, flag)
    user = _as_text(inter[user_col])
    item = _as_text(inter[item_col])
    time = _as_int_time(inter[time_col])
    bad = (user.is_null() | (user == "") | item.is_null() | (item == "") | time.is_null()).fill_null(True)
    if bad.any():
        rows = bad.arg_true().to_list()
        for r in rows:
            what = (
                "missing user"
                if user[r] in (None, "")
                else "missing item"
                if item[r] in (None, "")
                else f"time {inter[time_col][r]!r} is not an integer"
            )
            errors.add(interactions, first + r, what)
    keep = ~bad
    log = pl.DataFrame({"user": user, "item": item, "time": time}).filter(keep)
    if log.height == 0:
        raise UserError(f"{interactions}: no usable rows (user, item and integer time)")
    sources = [{"path": str(interactions), "role": "interactions", "sha256": sha256_of(interactions)}]

    if items is not None:
        table, _ = read_frame(items, "--items", sep)
        _need(table, item_col, items, "--item-col")
        sources.append({"path": str(items), "role": "items", "sha256": sha256_of(items)})
        table = table.with_columns(_as_text(table[item_col]))
        where = items
    else:
        table = inter.filter(keep).with_columns(_as_text(inter.filter(keep)[item_col]))
        where = interactions
    for dim, col in attributes.items():
        _need(table, col, where, f"--attribute {dim}=")
    table = table.with_columns(_as_text(table[c]) for c in set(attributes.values()) if c != item_col)
    cols = [pl.col(item_col).alias(ITEM_COL)]
    for dim, col in attributes.items():
        c = pl.col(col).cast(pl.String).str.strip_chars()
        c = pl.when((c == "") | c.is_in(list(missing_values))).then(None).otherwise(c)
        if dim == "category":
            path = c.str.split(category_sep) if category_sep else pl.concat_list(c)
            cols.append(path.list.eval(pl.element().str.strip_chars()).alias(CATEGORY_PATH_COL))
        elif dim == "price":
            price = c.str.replace_all(r"[$,€£\s]", "").cast(pl.Float64, strict=False)
            cols.append(pl.when(price.is_finite()).then(price).otherwise(None).alias(PRICE_COL))
        elif dim == "brand":
            cols.append(c.alias(BRAND_COL))
        else:
            cols.append(c.alias(dim))
    attrs = (
        table.select(cols).filter(pl.col(ITEM_COL).is_not_null()).unique(ITEM_COL, keep="first", maintain_order=True)
    )
    if CATEGORY_PATH_COL in attrs.columns:
        attrs = attrs.with_columns(
            pl.when(pl.col(CATEGORY_PATH_COL).list.len() == 0)
            .then(None)
            .otherwise(pl.col(CATEGORY_PATH_COL))
            .alias(CATEGORY_PATH_COL)
        )
    return RawLog(
        interactions=log,
        items=attrs,
        source="table",
        sources=sources,
        skipped_lines=errors.to_info(),
        info={
            "columns": {"user": user_col, "item": item_col, "time": time_col, "attributes": attributes},
            "category_sep": category_sep,
            "missing_values": list(missing_values),
        },
        numeric_ids=True,
    )
