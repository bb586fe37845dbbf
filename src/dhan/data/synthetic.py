"""The embedded synthetic dataset: hierarchical interests that a category-aware model can find.

Generative story (every parameter is recorded in ``schema.json`` under ``generator``):

* a category tree of ``top`` roots x ``mid`` children x ``leaf`` grandchildren; leaf sizes are skewed;
* items belong to one leaf, have a brand from their root's brand pool (Zipf) and a price around their leaf's
  price level; within a leaf, item popularity is Zipf-like;
* each user favours 1-2 roots, within them a few mid categories and within those a few leaves (drawn top-down with
  Dirichlet weights), and also a couple of brands and a price level;
* a sequence mostly stays in the current leaf for a while (``stay``), else jumps to a favoured leaf (or, with
  probability ``explore``, to any leaf); the item is drawn without replacement from the leaf, weighted by
  popularity x brand affinity x price affinity. So the next item is usually *unseen* but from a favoured
  category, brand and price band: item-level matching alone cannot find it, category-level interest can.

Default size: 2,000 users x ~25 behaviours = ~50k interactions, ~90k DIN train samples, so that one epoch of
DIN/DHAN takes seconds on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from dhan.data.raw import BRAND_COL, CATEGORY_PATH_COL, ITEM_COL, PRICE_COL, RawLog
from dhan.errors import UserError

_STREAM_SYNTHETIC = 6
MAX_SIZE = 10_000_000  # users or items: the generator is a Python loop over users, meant for small datasets


@dataclass(frozen=True)
class GeneratorParams:
    users: int = 2000
    items: int = 3000
    top: int = 4  # root categories
    mid: int = 4  # children per root
    leaf: int = 4  # children per mid category
    brands_per_top: int = 12
    mean_length: float = 25.0  # behaviours per user (5 + Poisson(mean_length - 5), capped at max_length)
    max_length: int = 120
    stay: float = 0.5  # probability that the next behaviour stays in the current leaf
    explore: float = 0.1  # probability that a jump goes to any leaf rather than a favoured one
    zipf: float = 1.1  # exponent of item popularity within a leaf
    brand_boost: float = 4.0  # weight factor of a user's favourite brands
    price_decay: float = 0.8  # weight factor exp(-price_decay * |log price - user's log price level|)
    seed: int = 1234


def generate(params: GeneratorParams) -> RawLog:
    if params.users < 1 or params.items < 2 * params.max_length:
        raise UserError(
            f"need --users >= 1 and items >= 2 x max_length; got users={params.users}, items={params.items}"
        )
    if params.users > MAX_SIZE or params.items > MAX_SIZE:
        raise UserError(f"--users and --items must be at most {MAX_SIZE:,}; got {params.users:,} and {params.items:,}")
    if params.seed < 0:
        raise UserError(f"--seed must be >= 0; got {params.seed}")
    p = params
    rng = np.random.default_rng([p.seed, _STREAM_SYNTHETIC])
    n_leaf = p.top * p.mid * p.leaf
    leaf_top = np.arange(n_leaf) // (p.mid * p.leaf)
    leaf_mid = np.arange(n_leaf) // p.leaf  # global mid index
    # items: skewed leaf sizes, at least one item per leaf
    leaf_share = rng.dirichlet(np.full(n_leaf, 1.5))
    base = np.repeat(np.arange(n_leaf), max(1, min(8, p.items // n_leaf)))
    item_leaf = np.concatenate([base, rng.choice(n_leaf, size=max(p.items - len(base), 0), p=leaf_share)])
    item_leaf = np.sort(item_leaf[: p.items])
    n_items = len(item_leaf)
    rank = np.empty(n_items)
    for leaf in range(n_leaf):  # popularity rank inside the leaf
        idx = np.flatnonzero(item_leaf == leaf)
        rank[idx] = rng.permutation(len(idx)) + 1
    popularity = rank ** (-p.zipf)
    brand_zipf = (np.arange(p.brands_per_top) + 1.0) ** -1.0
    item_brand = leaf_top[item_leaf] * p.brands_per_top + rng.choice(
        p.brands_per_top, size=n_items, p=brand_zipf / brand_zipf.sum()
    )
    leaf_price = rng.normal(3.0, 0.8, size=n_leaf)  # log price level of each leaf
    item_logprice = leaf_price[item_leaf] + rng.normal(0, 0.5, size=n_items)

    users_rows: list[np.ndarray] = []
    items_rows: list[np.ndarray] = []
    times_rows: list[np.ndarray] = []
    lengths = np.minimum(5 + rng.poisson(max(p.mean_length - 5, 0), size=p.users), p.max_length)
    for u in range(p.users):
        # top-down interests: roots, then mid categories inside them, then leaves inside those
        tops = rng.choice(p.top, size=rng.integers(1, 3), replace=False)
        mids = np.concatenate([t * p.mid + rng.choice(p.mid, size=rng.integers(1, 3), replace=False) for t in tops])
        leaves = np.concatenate([m * p.leaf + rng.choice(p.leaf, size=rng.integers(1, 4), replace=False) for m in mids])
        weights = rng.dirichlet(np.ones(len(leaves)))
        fav_brands = rng.choice(
            np.concatenate([t * p.brands_per_top + np.arange(p.brands_per_top) for t in tops]), size=2, replace=False
        )
        price_level = rng.normal(leaf_price[leaves] @ weights, 0.3)
        n = int(lengths[u])
        jump = rng.choice(leaves, size=n, p=weights)
        anywhere = rng.random(n) < p.explore
        jump[anywhere] = rng.integers(0, n_leaf, size=int(anywhere.sum()))
        stay = rng.random(n) < p.stay
        stay[0] = False
        last_jump = np.maximum.accumulate(np.where(~stay, np.arange(n), 0))
        seq_leaf = jump[last_jump]
        chosen = np.empty(n, dtype=np.int64)
        for leaf in np.unique(seq_leaf):
            steps = np.flatnonzero(seq_leaf == leaf)
            cand = np.flatnonzero(item_leaf == leaf)
            w = popularity[cand] * np.where(np.isin(item_brand[cand], fav_brands), p.brand_boost, 1.0)
            w = w * np.exp(-p.price_decay * np.abs(item_logprice[cand] - price_level))
            # Gumbel top-k: a weighted draw without replacement, so the user keeps meeting unseen items
            keys = np.log(w) + rng.gumbel(size=len(cand))
            order = cand[np.argsort(-keys)]
            chosen[steps[: len(order)]] = order[: len(steps)]
            chosen[steps[len(order) :]] = -1  # the leaf is exhausted: filled below with other unseen items
        short = np.flatnonzero(chosen < 0)
        if len(short):
            rest = np.setdiff1d(np.arange(n_items), chosen[chosen >= 0])
            keys = np.log(popularity[rest]) + rng.gumbel(size=len(rest))
            chosen[short] = rest[np.argsort(-keys)[: len(short)]]
        users_rows.append(np.full(n, u))
        items_rows.append(chosen)
        times_rows.append(1_400_000_000 + np.cumsum(rng.integers(0, 3, size=n) * 86_400))  # day ties happen
    user = np.concatenate(users_rows)
    item = np.concatenate(items_rows)
    inter = pl.DataFrame(
        {
            "user": [f"u{x:06d}" for x in user],
            "item": [f"i{x:06d}" for x in item],
            "time": np.concatenate(times_rows).astype(np.int64),
        }
    )
    names_top = [f"Dept {t + 1}" for t in range(p.top)]
    path = [
        [names_top[leaf_top[lf]], f"Aisle {leaf_mid[lf] + 1:02d}", f"Shelf {lf + 1:03d}"] for lf in item_leaf.tolist()
    ]
    items = pl.DataFrame(
        {
            ITEM_COL: [f"i{x:06d}" for x in range(n_items)],
            CATEGORY_PATH_COL: path,
            BRAND_COL: [f"Brand {b + 1:03d}" for b in item_brand.tolist()],
            PRICE_COL: np.round(np.exp(item_logprice), 2),
        },
        schema={
            ITEM_COL: pl.String,
            CATEGORY_PATH_COL: pl.List(pl.String),
            BRAND_COL: pl.String,
            PRICE_COL: pl.Float64,
        },
    )
    return RawLog(
        interactions=inter,
        items=items,
        source="synthetic",
        info={"generator": {"name": "dhan.data.synthetic", **asdict(p)}},
    )
