"""Pure, vectorised functions that turn sorted per-user histories into samples: negatives, recipes, splits.

Everything here works on the CSR layout of :mod:`dhan.data.store` (``offsets``, ``hist_item``) and takes an explicit
``numpy.random.Generator``, so the same inputs and seed give the same arrays, and the leak-free properties can be
tested on these functions directly.
"""

from __future__ import annotations

import numpy as np

from dhan.data.store import SampleTable
from dhan.errors import UserError
from dhan.schema import FIRST_ID

MAX_REJECTION_ROUNDS = 64  # redraws before the leftovers get an exact draw from their user's complement


def user_of_rows(offsets: np.ndarray) -> np.ndarray:
    """(N,) user index of every behaviour."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def draw_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    offsets: np.ndarray,
    hist_item: np.ndarray,
    num_items: int,
    popularity: np.ndarray | None = None,
) -> np.ndarray:
    """One item per entry of ``users`` that this user never interacted with.

    Uniform over the real items ``2 .. num_items + 1``, or proportional to ``popularity`` (an ``(item_vocab,)``
    weight, e.g. interaction counts, as DIEN's negatives drawn from review rows). Rejection sampling against a
    sorted array of ``user * V + item`` keys; after ``MAX_REJECTION_ROUNDS`` the rare leftovers (users who own most
    of the catalogue) are drawn exactly from their complement.
    """
    vocab = num_items + FIRST_ID
    keys = np.unique(user_of_rows(offsets) * vocab + hist_item)
    counts = np.diff(offsets)
    if len(users) and (counts[users] >= num_items).any():
        u = int(users[counts[users] >= num_items][0])
        raise UserError(
            f"user index {u} interacted with every one of the {num_items} items, so no negative item exists; "
            "drop such users (--min-category-items / a larger catalogue)"
        )
    cdf = None
    if popularity is not None:
        w = popularity.astype(np.float64).copy()
        w[:FIRST_ID] = 0.0
        if w.sum() <= 0:
            raise ValueError("popularity has no positive weight on real items")
        cdf = np.cumsum(w) / w.sum()

    def draw(n: int) -> np.ndarray:
        if cdf is None:
            return rng.integers(FIRST_ID, vocab, size=n, dtype=np.int64)
        return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), vocab - 1).astype(np.int64)

    out = draw(len(users))
    todo = np.arange(len(users))
    for _ in range(MAX_REJECTION_ROUNDS):
        k = users[todo] * vocab + out[todo]
        pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        todo = todo[keys[pos] == k]
        if len(todo) == 0:
            return out
        out[todo] = draw(len(todo))
    for i in todo:  # exact fallback: few rows, each from the complement of its user's items
        u = int(users[i])
        own = hist_item[offsets[u] : offsets[u + 1]]
        allowed = np.setdiff1d(np.arange(FIRST_ID, vocab, dtype=np.int64), own)
        if cdf is not None and popularity is not None:
            p = popularity[allowed].astype(np.float64)
            out[i] = rng.choice(allowed, p=p / p.sum()) if p.sum() > 0 else rng.choice(allowed)
        else:
            out[i] = rng.choice(allowed)
    return out


def din_samples(offsets: np.ndarray, hist_item: np.ndarray, hist_neg: np.ndarray, split: str) -> dict[str, SampleTable]:
    """DIN recipe (paper section 3.1): every behaviour after a user's first is a positive target with all earlier
    behaviours as history, paired with a negative with the same history.

    The negative target at position k is the behaviour's own negative ``hist_neg[k]``: as in the authors'
    ``3_build_dataset.py``, one negative per position, drawn once. ``split``: ``leave-last`` puts each user's last
    target in test, the second-to-last in valid, the rest in train; ``paper`` has only train and test (last).
    """
    lengths = np.diff(offsets)
    n_targets = np.maximum(lengths - 1, 0)
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), n_targets)
    starts = np.cumsum(n_targets) - n_targets
    position = np.arange(int(n_targets.sum()), dtype=np.int64) - np.repeat(starts, n_targets) + 1
    row = offsets[users] + position
    from_end = lengths[users] - position  # 1 = the user's last behaviour
    if split == "leave-last":
        tag = np.where(from_end == 1, 2, np.where(from_end == 2, 1, 0))
    elif split == "paper":
        tag = np.where(from_end == 1, 2, 0)
    else:
        raise UserError(f"--split must be leave-last or paper; got {split!r}")
    return _paired(users, position, hist_item[row], hist_neg[row], tag)


def dien_samples(
    offsets: np.ndarray,
    hist_item: np.ndarray,
    hist_neg: np.ndarray,
    rng: np.random.Generator,
    valid_fraction: float,
    test_fraction: float,
) -> dict[str, SampleTable]:
    """DIEN recipe (paper section 3.2): one positive/negative pair per user at the last behaviour, with the whole
    earlier history; users are split at random into train/valid/test (disjoint)."""
    lengths = np.diff(offsets)
    users = np.flatnonzero(lengths >= 2).astype(np.int64)
    perm = rng.permutation(len(users))
    n_test = round(test_fraction * len(users))
    n_valid = round(valid_fraction * len(users))
    tag = np.zeros(len(users), dtype=np.int64)
    tag[perm[:n_test]] = 2
    tag[perm[n_test : n_test + n_valid]] = 1
    position = lengths[users] - 1
    row = offsets[users] + position
    return _paired(users, position, hist_item[row], hist_neg[row], tag)


def _paired(
    users: np.ndarray, position: np.ndarray, pos: np.ndarray, neg: np.ndarray, tag: np.ndarray
) -> dict[str, SampleTable]:
    out = {}
    for code, name in enumerate(("train", "valid", "test")):
        m = tag == code
        u, p = np.repeat(users[m], 2), np.repeat(position[m], 2)
        target = np.stack([pos[m], neg[m]], axis=1).reshape(-1)
        label = np.tile(np.array([1, 0], dtype=np.int8), int(m.sum()))
        out[name] = SampleTable(u, p, target.astype(np.int64), label)
    return out


def quantile_bands(values: np.ndarray, n_bands: int) -> tuple[np.ndarray, list[str]]:
    """Band index ``0 .. B-1`` of every finite value (``-1`` for NaN) and a readable name per band.

    Edges are the value quantiles; equal edges (many identical prices) merge into fewer bands.
    """
    finite = values[np.isfinite(values)]
    band = np.full(len(values), -1, dtype=np.int64)
    if len(finite) == 0:
        return band, []
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bands + 1)[1:-1]))
    ok = np.isfinite(values)
    band[ok] = np.searchsorted(edges, values[ok], side="right")
    bounds = [float(finite.min()), *edges.tolist(), float(finite.max())]
    names = [f"{k + 1}: {bounds[k]:.2f}-{bounds[k + 1]:.2f}" for k in range(len(edges) + 1)]
    return band, names
