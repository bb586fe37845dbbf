from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dhan.batch import Batch
from dhan.data.loader import BatchLoader, HistoryTensors
from dhan.data.store import PreparedData
from dhan.errors import DataFormatError
from dhan.schema import Schema


def test_save_load_round_trip(tiny_data: PreparedData, tmp_path) -> None:
    out = tiny_data.save(tmp_path / "ds")
    loaded = PreparedData.load(out)
    assert loaded.schema == tiny_data.schema
    np.testing.assert_array_equal(loaded.item_attrs, tiny_data.item_attrs)
    np.testing.assert_array_equal(loaded.offsets, tiny_data.offsets)
    np.testing.assert_array_equal(loaded.hist_item, tiny_data.hist_item)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(loaded.split(split).target, tiny_data.split(split).target)
    assert loaded.attribute_values == tiny_data.attribute_values
    assert loaded.item_raw_ids == tiny_data.item_raw_ids


def test_save_replaces_atomically_and_refuses_foreign_dirs(tiny_data: PreparedData, tmp_path) -> None:
    out = tmp_path / "ds"
    tiny_data.save(out)
    tiny_data.save(out)  # replacing a dataset is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary leftovers
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not a dhan dataset"):
        tiny_data.save(foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_schema_version_mismatch_is_a_clear_error(tiny_data: PreparedData, tmp_path) -> None:
    out = tiny_data.save(tmp_path / "ds")
    meta = json.loads((out / "schema.json").read_text())
    meta["version"] = 99
    (out / "schema.json").write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="version 99"):
        Schema.load(out)


def test_gather_matches_a_per_sample_loop(tiny_data: PreparedData) -> None:
    hist = HistoryTensors(tiny_data)
    s = tiny_data.split("train")
    batch = hist.gather(torch.from_numpy(s.user), torch.from_numpy(s.position), torch.from_numpy(s.target), max_len=3)
    batch.validate(num_attributes=4)
    for b in range(len(s)):
        start = tiny_data.offsets[s.user[b]]
        seq = tiny_data.hist_item[start : start + s.position[b]][-3:]
        n = len(seq)
        assert batch.hist_mask[b].sum() == n
        np.testing.assert_array_equal(batch.hist_items[b, :n].numpy(), seq)
        assert (batch.hist_items[b, n:] == 0).all()
        np.testing.assert_array_equal(batch.hist_attrs[b, :n].numpy(), tiny_data.item_attrs[seq])
        assert (batch.hist_attrs[b, n:] == 0).all()


def test_loader_is_deterministic_and_resumable(tiny_data: PreparedData) -> None:
    hist = HistoryTensors(tiny_data)
    loader = BatchLoader(hist, tiny_data.split("train"), batch_size=4, shuffle=True, seed=3)
    loader.set_epoch(1)
    full = [b.target_item.tolist() for b in loader]
    loader.set_epoch(1, start_batch=2)
    resumed = [b.target_item.tolist() for b in loader]
    assert resumed == full[2:]
    loader.set_epoch(2)
    assert [b.target_item.tolist() for b in loader] != full
    covered = sorted(t for batch in full for t in batch)
    assert covered == sorted(tiny_data.split("train").target.tolist())


def test_loader_shards_across_ranks(tiny_data: PreparedData) -> None:
    hist = HistoryTensors(tiny_data)
    s = tiny_data.split("train")
    loaders = [BatchLoader(hist, s, 2, shuffle=True, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == (len(s) // 2) // 2
    per_rank = [[i for b in ld for i in b.target_item.tolist()] for ld in loaders]
    whole = BatchLoader(hist, s, 2, shuffle=True, seed=1)
    first = [b.target_item.tolist() for b in whole][: 2 * len(loaders[0])]
    assert per_rank[0] == [t for k, b in enumerate(first) if k % 2 == 0 for t in b]
    assert per_rank[1] == [t for k, b in enumerate(first) if k % 2 == 1 for t in b]


def test_with_padding_appends_on_the_right(tiny_batch: Batch) -> None:
    padded = tiny_batch.with_padding(3)
    assert padded.hist_len == tiny_batch.hist_len + 3
    assert not padded.hist_mask[:, -3:].any()
    padded.validate()


def test_bucketing_groups_similar_lengths_and_stays_a_permutation(tiny_data: PreparedData) -> None:
    hist = HistoryTensors(tiny_data)
    s = tiny_data.split("train")
    plain = BatchLoader(hist, s, 3, shuffle=True, seed=5)
    bucketed = BatchLoader(hist, s, 3, shuffle=True, seed=5, bucket_batches=4)
    assert sorted(bucketed.order().tolist()) == list(range(len(s)))
    assert bucketed.order().tolist() == bucketed.order().tolist()  # deterministic

    def spread(loader: BatchLoader) -> int:
        return sum(int(b.hist_mask.sum(1).max() - b.hist_mask.sum(1).min()) for b in loader)

    assert spread(bucketed) <= spread(plain)
