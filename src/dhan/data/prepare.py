"""From a :class:`~dhan.data.raw.RawLog` to a :class:`~dhan.data.store.PreparedData`: filters, ids, histories,
negatives, samples and the bookkeeping that goes into ``schema.json``.

Order of the steps (each one's counts go into the summary):

1. ``--sample-reviews``: a seeded share of interaction rows (the paper's 10 % of reviews for Six-Category);
2. exact duplicate ``(user, item, time)`` rows are dropped (the first is kept) and counted;
3. ``--sample-users``: a seeded share of users (the paper's 10 % of users for its DIEN-style samples);
4. ``--min-category-items``: items whose category (at ``--category-level``) has fewer items are dropped, counted
   among the reviewed items as the authors' ``2_remap_id.py`` does; the unknown category is a group like any other;
5. ``--min-user-interactions``: users with fewer remaining behaviours are dropped (DIEN recipe: 5);
6. ids from sorted raw ids; behaviours sorted by (user, time, file order), so ties in time keep file order;
7. one negative per behaviour, then the recipe's samples.

Random streams are separate per purpose (``default_rng([seed, stream])``) so that, for instance, changing the
user sample does not change how reviews are sampled.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from dhan import __version__
from dhan.data import recipes
from dhan.data.raw import BRAND_COL, CATEGORY_PATH_COL, ITEM_COL, PRICE_COL, RawLog
from dhan.data.store import SPLITS, PreparedData
from dhan.errors import UserError
from dhan.schema import FIRST_ID, PAD_ID, UNKNOWN_ID, AttributeSpec, Schema

log = logging.getLogger(__name__)

PAD_NAME, UNKNOWN_NAME = "<pad>", "<unknown>"
MAX_PRICE_BANDS = 1000  # more quantile bands than this only spends memory: each one needs items to be meaningful
_STREAM_REVIEWS, _STREAM_USERS, _STREAM_HIST_NEG, _STREAM_SPLIT = 1, 2, 3, 4


@dataclass(frozen=True)
class PrepareOptions:
    """The settings of one ``dhan prepare`` run; all of them are recorded in ``schema.json`` (``filters``)."""

    recipe: str = "din"  # "din" (paper 3.1) or "dien" (paper 3.2)
    split: str = "leave-last"  # din: "leave-last" (train/valid/test) or "paper" (train/test, the authors')
    max_len: int = 100  # the loader keeps the most recent max_len behaviours (DIEN's maxlen 100)
    category_level: int = -1  # index into the category path; -1 = the leaf, as the paper's code
    min_category_items: int = 0  # the paper used 300 (categories with > 299 items)
    min_user_interactions: int | None = None  # None: 5 for dien (paper), 1 for din
    sample_users: float = 1.0
    sample_reviews: float = 1.0
    seed: int = 1234  # the authors' random.seed(1234)
    negatives: str = "uniform"  # "uniform" over items (DIN) or "popularity" (DIEN's draw from review rows)
    valid_fraction: float | None = None  # dien user split; None: 0.1 (0.0 with --split paper)
    test_fraction: float | None = None  # dien user split; None: 0.1
    price_bands: int = 5

    def resolved(self) -> PrepareOptions:
        """Fill the recipe-dependent defaults and check ranges; a bad flag is a :class:`UserError`."""
        if self.recipe not in ("din", "dien"):
            raise UserError(f"--recipe must be din or dien; got {self.recipe!r}")
        if self.split not in ("leave-last", "paper"):
            raise UserError(f"--split must be leave-last or paper; got {self.split!r}")
        if self.negatives not in ("uniform", "popularity"):
            raise UserError(f"--negatives must be uniform or popularity; got {self.negatives!r}")
        if self.max_len < 1:
            raise UserError(f"--max-len must be >= 1; got {self.max_len}")
        for name, v in (("--sample-users", self.sample_users), ("--sample-reviews", self.sample_reviews)):
            if not 0.0 < v <= 1.0:
                raise UserError(f"{name} must be a fraction in (0, 1]; got {v}")
        if not 1 <= self.price_bands <= MAX_PRICE_BANDS:
            raise UserError(f"--price-bands must be between 1 and {MAX_PRICE_BANDS}; got {self.price_bands}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0; got {self.seed}")
        if self.min_category_items < 0:
            raise UserError(f"--min-category-items must be >= 0; got {self.min_category_items}")
        min_user = self.min_user_interactions
        if min_user is None:
            min_user = 5 if self.recipe == "dien" else 1
        if min_user < 1:
            raise UserError(f"--min-user-interactions must be >= 1; got {min_user}")
        valid = self.valid_fraction
        if valid is None:
            valid = 0.0 if self.split == "paper" else 0.1
        test = 0.1 if self.test_fraction is None else self.test_fraction
        if valid < 0 or test < 0 or valid + test >= 1:
            raise UserError(f"--valid-fraction {valid} and --test-fraction {test} must be >= 0 with a sum below 1")
        return PrepareOptions(
            **{**asdict(self), "min_user_interactions": min_user, "valid_fraction": valid, "test_fraction": test}
        )


def prepare(raw: RawLog, options: PrepareOptions) -> tuple[PreparedData, dict[str, Any]]:
    """Build the dataset and a summary (counts per step) for the command line."""
    opts = options.resolved()
    inter = raw.interactions.select(
        pl.col("user").cast(pl.String), pl.col("item").cast(pl.String), pl.col("time").cast(pl.Int64)
    ).with_row_index("order")
    counts: dict[str, int] = {"rows_read": inter.height}

    if opts.sample_reviews < 1.0:
        keep = _sample_count(inter.height, opts.sample_reviews, np.random.default_rng([opts.seed, _STREAM_REVIEWS]))
        inter = inter[np.sort(keep)]
        counts["rows_after_sample_reviews"] = inter.height
    before = inter.height
    inter = inter.unique(subset=["user", "item", "time"], keep="first", maintain_order=True)
    duplicates = before - inter.height

    if opts.sample_users < 1.0:
        users = _sorted_unique(inter["user"], raw.numeric_ids)
        keep = _sample_count(len(users), opts.sample_users, np.random.default_rng([opts.seed, _STREAM_USERS]))
        inter = inter.filter(pl.col("user").is_in(users[np.sort(keep)].implode()))
        counts["users_after_sample_users"] = len(keep)

    items = _item_table(raw.items, inter, opts)
    if opts.min_category_items > 0:
        sizes = items.group_by("category", maintain_order=True).agg(pl.len().alias("n"))
        small = sizes.filter(pl.col("n") < opts.min_category_items)
        dropped = items.join(small.select("category"), on="category", how="semi", nulls_equal=True)
        items = items.join(dropped.select(ITEM_COL), on=ITEM_COL, how="anti")
        inter = inter.join(items.select(ITEM_COL), left_on="item", right_on=ITEM_COL, how="semi")
        counts["categories_dropped"] = small.height
        counts["items_dropped_by_category"] = dropped.height

    n_per_user = inter.group_by("user").agg(pl.len().alias("n"))
    short = n_per_user.filter(pl.col("n") < opts.min_user_interactions)
    if short.height:
        inter = inter.join(short.select("user"), on="user", how="anti")
        counts["users_dropped_by_min_interactions"] = short.height
    if inter.height == 0:
        raise UserError(
            "no users are left after the filters "
            f"(--min-category-items {opts.min_category_items}, --min-user-interactions {opts.min_user_interactions}, "
            f"--sample-users {opts.sample_users}, --sample-reviews {opts.sample_reviews}); loosen them"
        )

    # ids from sorted raw ids; only items that still have interactions get one
    item_raw = _sorted_unique(inter["item"], raw.numeric_ids)
    user_raw = _sorted_unique(inter["user"], raw.numeric_ids)
    item_ids = pl.DataFrame({"item": item_raw, "item_id": np.arange(FIRST_ID, FIRST_ID + len(item_raw))})
    user_ids = pl.DataFrame({"user": user_raw, "uid": np.arange(len(user_raw), dtype=np.int64)})
    inter = (
        inter.join(item_ids, on="item", how="left").join(user_ids, on="user", how="left").sort(["uid", "time", "order"])
    )
    items = item_ids.join(items, left_on="item", right_on=ITEM_COL, how="left", maintain_order="left")

    num_users, num_items = len(user_raw), len(item_raw)
    hist_item = inter["item_id"].to_numpy().astype(np.int64)
    hist_time = inter["time"].to_numpy().astype(np.int64)
    lengths = np.bincount(inter["uid"].to_numpy(), minlength=num_users).astype(np.int64)
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    attributes, item_attrs, attr_values, attr_info = _attributes(items, num_items, opts)

    popularity = None
    if opts.negatives == "popularity":
        popularity = np.bincount(hist_item, minlength=num_items + FIRST_ID).astype(np.float64)
    hist_neg = recipes.draw_negatives(
        np.random.default_rng([opts.seed, _STREAM_HIST_NEG]),
        recipes.user_of_rows(offsets),
        offsets,
        hist_item,
        num_items,
        popularity,
    )
    if opts.recipe == "din":
        samples = recipes.din_samples(offsets, hist_item, hist_neg, opts.split)
    else:
        samples = recipes.dien_samples(
            offsets,
            hist_item,
            hist_neg,
            np.random.default_rng([opts.seed, _STREAM_SPLIT]),
            float(opts.valid_fraction or 0.0),
            float(opts.test_fraction or 0.0),
        )
    splits = {s: len(samples[s]) for s in SPLITS}
    if sum(splits.values()) == 0:
        raise UserError(
            "the filters leave no user with two or more interactions, so there are no samples; loosen the filters"
        )
    counts |= {"users": num_users, "items": num_items, "interactions": int(hist_item.shape[0])}
    info: dict[str, Any] = {
        "dhan_version": __version__,
        "source": raw.source,
        "splits": splits,
        "split": opts.split if opts.recipe == "din" else "random-users",
        "seed": opts.seed,
        "num_interactions": int(hist_item.shape[0]),
        "duplicates_dropped": duplicates,
        "skipped_lines": raw.skipped_lines or {"count": 0, "files": {}},
        "sources": raw.sources,
        "filters": {k: v for k, v in asdict(opts).items() if k not in ("recipe", "seed", "max_len")},
        "counts": counts,
        "attribute_sources": attr_info,
        **raw.info,
    }
    schema = Schema(
        num_users=num_users,
        num_items=num_items,
        max_len=opts.max_len,
        attributes=tuple(attributes),
        recipe=opts.recipe,
        info=info,
    )
    data = PreparedData(
        schema=schema,
        item_attrs=item_attrs,
        item_raw_ids=[PAD_NAME, UNKNOWN_NAME, *map(str, item_raw.to_list())],
        attribute_values=attr_values,
        user_raw_ids=list(map(str, user_raw.to_list())),
        offsets=offsets,
        hist_item=hist_item,
        hist_time=hist_time,
        hist_neg=hist_neg,
        samples=samples,
    )
    summary = {
        "recipe": opts.recipe,
        "users": num_users,
        "items": num_items,
        "num_categories": schema.num_categories,
        "attributes": {a.name: a.num_values for a in attributes},
        "interactions": int(hist_item.shape[0]),
        "splits": splits,
        "duplicates_dropped": duplicates,
        "skipped_lines": info["skipped_lines"],
        "counts": counts,
    }
    return data, summary


def _sample_count(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of an exact, seeded ``round(fraction * n)`` share (at least one) of ``n`` things."""
    return rng.permutation(n)[: max(1, round(fraction * n))]


def _sorted_unique(col: pl.Series, numeric: bool) -> pl.Series:
    """Unique raw ids in a deterministic order: as integers when every id is one (table sources), else as text."""
    uniq = col.unique()
    if numeric and bool(uniq.str.contains(r"^-?\d{1,18}$").all()):
        return uniq.gather(uniq.cast(pl.Int64).arg_sort())
    return uniq.sort()


def _item_table(items: pl.DataFrame, inter: pl.DataFrame, opts: PrepareOptions) -> pl.DataFrame:
    """Reviewed items with their attributes; the category levels are picked out of the path here."""
    reviewed = inter.select(pl.col("item").unique().alias(ITEM_COL))
    table = reviewed.join(items, on=ITEM_COL, how="left")
    if CATEGORY_PATH_COL in table.columns:
        lvl = opts.category_level
        path = pl.col(CATEGORY_PATH_COL)
        parent, grand = lvl - 1, lvl - 2

        def get(i: int) -> pl.Expr:
            if i < 0 and lvl >= 0:  # above the root of the path
                return pl.lit(None, dtype=pl.String)
            return path.list.get(i, null_on_oob=True)

        table = table.with_columns(
            get(lvl).alias("category"), get(parent).alias("category_parent"), get(grand).alias("category_grandparent")
        ).drop(CATEGORY_PATH_COL)
    else:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("category"))
    return table


def _attributes(
    items: pl.DataFrame, num_items: int, opts: PrepareOptions
) -> tuple[list[AttributeSpec], np.ndarray, dict[str, list[str]], dict[str, str]]:
    """Attribute specs, the ``(item_vocab, A)`` id table and the id -> name lists of every attribute the data has.

    A level is included only when at least one item has a value for it, so a source without brands has no
    ``brand`` column and a one-level category path has no ``category_parent``.
    """
    specs: list[AttributeSpec] = []
    columns: list[np.ndarray] = []
    values: dict[str, list[str]] = {}
    where: dict[str, str] = {}

    def add(name: str, dimension: str, level: int, ids: np.ndarray, names: list[str]) -> None:
        specs.append(AttributeSpec(name, dimension, level, len(names)))
        col = np.empty(num_items + FIRST_ID, dtype=np.int64)
        col[PAD_ID], col[UNKNOWN_ID] = PAD_ID, UNKNOWN_ID
        col[FIRST_ID:] = ids
        columns.append(col)
        values[name] = [PAD_NAME, UNKNOWN_NAME, *names]

    def vocab(series: pl.Series) -> tuple[np.ndarray, list[str]]:
        names = series.drop_nulls().unique().sort().to_list()
        lookup = pl.DataFrame({"v": names, "id": np.arange(FIRST_ID, FIRST_ID + len(names), dtype=np.int64)})
        ids = pl.DataFrame({"v": series}).join(lookup, on="v", how="left", maintain_order="left")["id"]
        return ids.fill_null(UNKNOWN_ID).to_numpy().astype(np.int64), [str(n) for n in names]

    levels = ("category", "category_parent", "category_grandparent")
    for level, name in enumerate(levels, start=1):
        if name in items.columns and items[name].null_count() < items.height:
            if level > 1 and levels[level - 2] not in values:
                break
            ids, names = vocab(items[name])
            add(name, "category", level, ids, names)
            where[name] = f"category path element {opts.category_level - (level - 1)}"
    if BRAND_COL in items.columns and items[BRAND_COL].null_count() < items.height:
        ids, names = vocab(items[BRAND_COL])
        add("brand", "brand", 1, ids, names)
        where["brand"] = "brand"
    if PRICE_COL in items.columns and items[PRICE_COL].null_count() < items.height:
        band, names = recipes.quantile_bands(items[PRICE_COL].fill_null(np.nan).to_numpy(), opts.price_bands)
        add("price_band", "price", 1, np.where(band < 0, UNKNOWN_ID, band + FIRST_ID), names)
        where["price_band"] = f"price, {opts.price_bands} quantile bands"
    reserved = {"item_id", ITEM_COL, *levels, CATEGORY_PATH_COL, BRAND_COL, PRICE_COL}
    for name in items.columns:
        if name in reserved or items[name].null_count() == items.height:
            continue
        ids, names = vocab(items[name].cast(pl.String))
        add(name, name, 1, ids, names)
        where[name] = name
    table = np.stack(columns, axis=1) if columns else np.zeros((num_items + FIRST_ID, 0), dtype=np.int64)
    return specs, table, values, where
