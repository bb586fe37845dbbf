"""The prepared-dataset directory: what ``dhan prepare`` writes and everything else reads.

Histories are stored once per user, in time order, as flat arrays with offsets (CSR); a sample only points into
them with ``(user, position)``: its history is the user's first ``position`` behaviours (the loader keeps the
most recent ``max_len``) and its target is ``target``. Memory therefore grows with the number of interactions, not
with samples times history length.

Files in a dataset directory::

    schema.json                 Schema (vocabulary sizes, hierarchy) plus counts, seed, sources, filters
    items.parquet               item_id, raw_id, one int column per attribute (ids; 0 pad, 1 unknown)
    attribute_values.parquet    attribute, id, value: the raw name of every attribute id
    users.parquet               user, raw_id, length (users in the order of interactions.parquet)
    interactions.parquet        user, item, time, neg_item: all behaviours, sorted by user then time;
                                neg_item is one item the user never interacted with (DIEN auxiliary loss)
    samples_{train,valid,test}.parquet   user, position, target, label

Every id column is int64. ``items.parquet`` has a row for the padding id 0 (all attributes 0) and the unknown id 1
(all attributes 1) so that ``item_attrs[item]`` is a plain lookup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dhan.errors import DataFormatError, UserError
from dhan.schema import Schema

SPLITS = ("train", "valid", "test")


@dataclass
class SampleTable:
    """The samples of one split: each points into a user's history."""

    user: np.ndarray  # (S,) int64 user index
    position: np.ndarray  # (S,) int64: the history is the user's first `position` behaviours
    target: np.ndarray  # (S,) int64 item id
    label: np.ndarray  # (S,) int8 in {0, 1}

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @classmethod
    def empty(cls) -> SampleTable:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy(), np.zeros(0, dtype=np.int8))

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user": self.user.astype(np.int64),
                "position": self.position.astype(np.int64),
                "target": self.target.astype(np.int64),
                "label": self.label.astype(np.int8),
            }
        )


@dataclass
class PreparedData:
    """A whole prepared dataset in memory (numpy arrays)."""

    schema: Schema
    item_attrs: np.ndarray  # (item_vocab_size, A) int64; row 0 all PAD, row 1 all UNKNOWN
    item_raw_ids: list[str]  # raw id of item id i at index i (index 0 "<pad>", 1 "<unknown>")
    attribute_values: dict[str, list[str]]  # attribute -> raw value of id i at index i
    user_raw_ids: list[str]  # raw id of user index u
    offsets: np.ndarray  # (num_users + 1,) int64: user u's behaviours are [offsets[u], offsets[u+1])
    hist_item: np.ndarray  # (N,) int64
    hist_time: np.ndarray  # (N,) int64
    hist_neg: np.ndarray  # (N,) int64
    samples: dict[str, SampleTable] = field(default_factory=dict)

    def split(self, name: str) -> SampleTable:
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self.samples.get(name, SampleTable.empty())

    # ------------------------------------------------------------------ writing

    def save(self, out_dir: str | Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
        """Write the dataset to ``out_dir`` atomically.

        Everything is written into a temporary sibling directory which then replaces ``out_dir`` by rename, so an
        interrupted or failed write never leaves a half-written dataset and never destroys the previous one.
        """
        out = Path(out_dir)
        parent = out.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{out}: cannot create the output directory ({exc.strerror}); choose another --out"
            ) from None
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory; choose another --out")
        if out.is_dir() and any(out.iterdir()) and not (out / "schema.json").is_file():
            raise UserError(
                f"{out}: exists, is not empty and is not a dhan dataset; refusing to replace it. Choose another --out"
            )
        tmp = parent / f".{out.name}.tmp-{os.getpid()}"
        old = parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            self._write_files(tmp)
            for name, blob in (extra_files or {}).items():
                (tmp / name).write_bytes(blob)
            _fsync_dir(tmp)
            moved = False
            if out.exists():
                out.rename(old)
                moved = True
            try:
                tmp.rename(out)
            except BaseException:
                if moved:  # put the previous dataset back: a failed save never loses it
                    old.rename(out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, pl.exceptions.PolarsError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"{out}: cannot write the dataset ({_io_reason(exc)}); check space and permissions. "
                "A previous dataset there is unchanged"
            ) from None
        except BaseException:  # interrupted (Ctrl-C) or a bug: still no half-written directory
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def _write_files(self, d: Path) -> None:
        names = self.schema.attribute_names
        items = {"item_id": np.arange(len(self.item_raw_ids), dtype=np.int64), "raw_id": self.item_raw_ids}
        for a, name in enumerate(names):
            items[name] = self.item_attrs[:, a].astype(np.int64)
        pl.DataFrame(items).write_parquet(d / "items.parquet")
        attr_rows: dict[str, list[object]] = {"attribute": [], "id": [], "value": []}
        for name in names:
            values = self.attribute_values[name]
            attr_rows["attribute"].extend([name] * len(values))
            attr_rows["id"].extend(range(len(values)))
            attr_rows["value"].extend(values)
        pl.DataFrame(attr_rows, schema={"attribute": pl.String, "id": pl.Int64, "value": pl.String}).write_parquet(
            d / "attribute_values.parquet"
        )
        lengths = np.diff(self.offsets).astype(np.int64)
        pl.DataFrame(
            {"user": np.arange(len(self.user_raw_ids), dtype=np.int64), "raw_id": self.user_raw_ids, "length": lengths},
            schema={"user": pl.Int64, "raw_id": pl.String, "length": pl.Int64},
        ).write_parquet(d / "users.parquet")
        pl.DataFrame(
            {
                "user": np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
                "item": self.hist_item.astype(np.int64),
                "time": self.hist_time.astype(np.int64),
                "neg_item": self.hist_neg.astype(np.int64),
            }
        ).write_parquet(d / "interactions.parquet")
        for split in SPLITS:
            self.split(split).to_frame().write_parquet(d / f"samples_{split}.parquet")
        self.schema.save(d / "schema.json")

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, data_dir: str | Path) -> PreparedData:
        d = Path(data_dir)
        if not d.is_dir():
            raise DataFormatError(f"{d}: no such directory; create it with `dhan prepare ... --out {d}`")
        schema = Schema.load(d / "schema.json")
        try:
            items = pl.read_parquet(d / "items.parquet")
            attr_values = pl.read_parquet(d / "attribute_values.parquet")
            users = pl.read_parquet(d / "users.parquet")
            inter = pl.read_parquet(d / "interactions.parquet")
            samples = {s: pl.read_parquet(d / f"samples_{s}.parquet") for s in SPLITS}
        except (OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
            raise DataFormatError(
                f"{d}: damaged or incomplete dataset ({_io_reason(exc)}); re-run `dhan prepare`"
            ) from None
        try:
            return cls._from_frames(d, schema, items, attr_values, users, inter, samples)
        except (KeyError, TypeError, ValueError, IndexError, pl.exceptions.PolarsError) as exc:
            raise DataFormatError(
                f"{d}: damaged dataset, its files do not fit schema.json ({_io_reason(exc)}); re-run `dhan prepare`"
            ) from None

    @classmethod
    def _from_frames(
        cls,
        d: Path,
        schema: Schema,
        items: pl.DataFrame,
        attr_values: pl.DataFrame,
        users: pl.DataFrame,
        inter: pl.DataFrame,
        samples: dict[str, pl.DataFrame],
    ) -> PreparedData:
        names = schema.attribute_names
        missing = [n for n in ("item_id", "raw_id", *names) if n not in items.columns]
        if missing:
            raise DataFormatError(f"{d / 'items.parquet'}: missing columns {missing}; re-run `dhan prepare`")
        item_attrs = (
            items.select(names).to_numpy().astype(np.int64) if names else np.zeros((items.height, 0), dtype=np.int64)
        )
        values: dict[str, list[str]] = {}
        for name in names:
            sub = attr_values.filter(pl.col("attribute") == name).sort("id")
            values[name] = sub["value"].to_list()
        lengths = users["length"].to_numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] != inter.height:
            raise DataFormatError(f"{d}: users.parquet and interactions.parquet disagree; re-run `dhan prepare`")
        return cls(
            schema=schema,
            item_attrs=item_attrs,
            item_raw_ids=items["raw_id"].to_list(),
            attribute_values=values,
            user_raw_ids=users["raw_id"].to_list(),
            offsets=offsets,
            hist_item=inter["item"].to_numpy().astype(np.int64),
            hist_time=inter["time"].to_numpy().astype(np.int64),
            hist_neg=inter["neg_item"].to_numpy().astype(np.int64),
            samples={
                s: SampleTable(
                    user=f["user"].to_numpy().astype(np.int64),
                    position=f["position"].to_numpy().astype(np.int64),
                    target=f["target"].to_numpy().astype(np.int64),
                    label=f["label"].to_numpy().astype(np.int8),
                )
                for s, f in samples.items()
            },
        )


def _io_reason(exc: BaseException) -> str:
    """The first line of an I/O failure: ``No space left on device`` rather than polars' whole context."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    if "os error 28" in text or "No space left" in text:
        return "No space left on device"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _fsync_dir(d: Path) -> None:
    for p in d.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
