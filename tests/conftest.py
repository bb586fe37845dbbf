"""Shared fixtures: a tiny hand-made prepared dataset and batches built from it.

Nothing here reads ``../shared``: a user's clone has no such directory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhan.batch import Batch
from dhan.data.loader import HistoryTensors
from dhan.data.store import PreparedData, SampleTable
from dhan.schema import AttributeSpec, Schema


def make_tiny_data(num_users: int = 6, num_items: int = 12, seed: int = 0, max_len: int = 5) -> PreparedData:
    """A small DIN-recipe dataset: 2 category levels, a brand, a price band; leave-last-out splits.

    Items 2..num_items+1; category of item i is (i % 4) + 2, its parent (i % 2) + 2, brand (i % 3) + 2.
    """
    rng = np.random.default_rng(seed)
    schema = Schema(
        num_users=num_users,
        num_items=num_items,
        max_len=max_len,
        attributes=(
            AttributeSpec("category", "category", 1, 4),
            AttributeSpec("category_parent", "category", 2, 2),
            AttributeSpec("brand", "brand", 1, 3),
            AttributeSpec("price_band", "price", 1, 2),
        ),
        recipe="din",
        info={"splits": {}, "seed": seed},
    )
    ids = np.arange(num_items + 2)
    item_attrs = np.stack([ids % 4 + 2, ids % 2 + 2, ids % 3 + 2, ids % 2 + 2], axis=1).astype(np.int64)
    item_attrs[0] = 0
    item_attrs[1] = 1
    lengths = rng.integers(3, 9, size=num_users)
    hist_item, hist_neg, samples = [], [], {"train": [], "valid": [], "test": []}
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    for u, n in enumerate(lengths):
        seq = rng.choice(np.arange(2, num_items + 2), size=n, replace=False)
        others = np.setdiff1d(np.arange(2, num_items + 2), seq)
        hist_item.extend(seq)
        hist_neg.extend(rng.choice(others, size=n))
        offsets[u + 1] = offsets[u] + n
        for k in range(1, n):
            split = "test" if k == n - 1 else "valid" if k == n - 2 else "train"
            samples[split].append((u, k, seq[k], 1))
            samples[split].append((u, k, rng.choice(others), 0))
    tables = {}
    for split, rows in samples.items():
        arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
        tables[split] = SampleTable(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3].astype(np.int8))
    return PreparedData(
        schema=schema,
        item_attrs=item_attrs,
        item_raw_ids=["<pad>", "<unknown>", *[f"item{i}" for i in range(2, num_items + 2)]],
        attribute_values={
            "category": ["<pad>", "<unknown>", "c0", "c1", "c2", "c3"],
            "category_parent": ["<pad>", "<unknown>", "p0", "p1"],
            "brand": ["<pad>", "<unknown>", "b0", "b1", "b2"],
            "price_band": ["<pad>", "<unknown>", "low", "high"],
        },
        user_raw_ids=[f"user{u}" for u in range(num_users)],
        offsets=offsets,
        hist_item=np.array(hist_item, dtype=np.int64),
        hist_time=np.arange(len(hist_item), dtype=np.int64) * 100,
        hist_neg=np.array(hist_neg, dtype=np.int64),
        samples=tables,
    )


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: tiny tensors on 2 busy cores are many times slower with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_data() -> PreparedData:
    return make_tiny_data()


@pytest.fixture
def tiny_schema(tiny_data: PreparedData) -> Schema:
    return tiny_data.schema


@pytest.fixture
def tiny_batch(tiny_data: PreparedData) -> Batch:
    """B=6 samples from the train split plus one row with an empty history (position 0)."""
    hist = HistoryTensors(tiny_data)
    s = tiny_data.split("train")
    user = torch.from_numpy(np.append(s.user[:6], 0))
    position = torch.from_numpy(np.append(s.position[:6], 0))
    target = torch.from_numpy(np.append(s.target[:6], 5))
    label = torch.from_numpy(np.append(s.label[:6], 1).astype(np.float32))
    return hist.gather(user, position, target, label)
