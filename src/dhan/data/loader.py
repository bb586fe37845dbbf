"""Batches gathered from the stored per-user histories with vectorised indexing.

The whole prepared dataset is held as tensors (Amazon-sized sets fit by far). A batch of samples
``(user, position, target, label)`` becomes a :class:`~dhan.batch.Batch` with one gather: for sample ``s`` with
``n = min(position, max_len)`` history items, slot ``j < n`` holds behaviour ``offsets[user] + position - n + j``.
Histories are padded to the longest history in the batch (capped at ``max_len``), not to ``max_len``, so short
histories cost short compute. There is no per-sample Python work.

The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so a run that stops after batch ``k``
resumes at batch ``k`` of the same permutation (``start_batch``). With ``bucket_batches=N`` the shuffled samples are
sorted by history length inside each window of ``N`` batches and the batches are shuffled again (DIEN's data
iterator sorts 20 batches at a time the same way): batches then hold histories of similar length, so padding to the
batch maximum wastes little compute on data with a few very long histories (Amazon: mean 7, maximum 200+).
Without shuffling, ``bucket_batches > 1`` sorts the whole split by history length (evaluation order does not matter).
With ``world_size > 1`` each rank takes every ``world_size``-th batch of that permutation (distributed training).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dhan.batch import Batch
from dhan.data.store import PreparedData, SampleTable


class HistoryTensors:
    """The dataset's histories and item attribute table as torch tensors, shared by every split's loader."""

    def __init__(self, data: PreparedData) -> None:
        self.offsets = torch.from_numpy(data.offsets)
        self.hist_item = torch.from_numpy(data.hist_item)
        self.hist_neg = torch.from_numpy(data.hist_neg)
        self.item_attrs = torch.from_numpy(np.ascontiguousarray(data.item_attrs))
        self.max_len = data.schema.max_len

    def gather(
        self,
        user: torch.Tensor,
        position: torch.Tensor,
        target: torch.Tensor,
        label: torch.Tensor | None = None,
        max_len: int | None = None,
        with_negatives: bool = True,
    ) -> Batch:
        """Build the batch of the given samples. All inputs are (B,) int64 tensors (label float32)."""
        t_max = self.max_len if max_len is None else max_len
        n = torch.clamp(position, max=t_max)  # (B,) history length of each sample
        t = max(int(n.max()) if n.numel() else 0, 1)  # pad to the longest history in the batch
        slots = torch.arange(t)
        hist_mask = slots[None, :] < n[:, None]  # (B, T)
        gidx = self.offsets[user][:, None] + (position - n)[:, None] + slots[None, :]  # (B, T)
        gidx = torch.where(hist_mask, gidx, torch.zeros_like(gidx))
        hist_items = torch.where(hist_mask, self.hist_item[gidx], torch.zeros_like(gidx))  # (B, T)
        neg_items = neg_attrs = None
        if with_negatives:
            neg_items = torch.where(hist_mask, self.hist_neg[gidx], torch.zeros_like(gidx))  # (B, T)
            neg_attrs = self.item_attrs[neg_items]  # (B, T, A)
        return Batch(
            target_item=target,
            target_attrs=self.item_attrs[target],  # (B, A)
            hist_items=hist_items,
            hist_attrs=self.item_attrs[hist_items],  # (B, T, A); row 0 of item_attrs is all padding
            hist_mask=hist_mask,
            label=label,
            neg_hist_items=neg_items,
            neg_hist_attrs=neg_attrs,
            user=user,
        )


class BatchLoader:
    """Iterates over one split in batches; deterministic given ``(seed, epoch)``."""

    def __init__(
        self,
        histories: HistoryTensors,
        samples: SampleTable,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        max_len: int | None = None,
        drop_last: bool = False,
        with_negatives: bool = True,
        rank: int = 0,
        world_size: int = 1,
        bucket_batches: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.histories = histories
        self.user = torch.from_numpy(samples.user)
        self.position = torch.from_numpy(samples.position)
        self.target = torch.from_numpy(samples.target)
        self.label = torch.from_numpy(samples.label.astype(np.float32))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_len = max_len
        self.drop_last = drop_last
        self.with_negatives = with_negatives
        self.rank = rank
        self.world_size = world_size
        self.bucket_batches = bucket_batches
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_samples(self) -> int:
        return int(self.user.shape[0])

    def _num_global_batches(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields in one epoch (counting from batch 0)."""
        total = self._num_global_batches()
        if self.world_size > 1:
            # every rank takes the same number of batches so that collective operations stay in step
            return total // self.world_size
        return total

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and the first batch to yield (for resuming)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            if self.bucket_batches > 1:
                return torch.sort(self._lengths(torch.arange(self.num_samples)), stable=True).indices
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen)
        if self.bucket_batches > 1:
            order = self._bucket(order, gen)
        return order

    def _lengths(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.position[idx], max=self.histories.max_len if self.max_len is None else self.max_len)

    def _bucket(self, order: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Sort by history length within windows of ``bucket_batches`` batches, then shuffle whole batches.

        The unit is the *global* batch (all ranks' batches of one step), so a distributed run sees the same global
        batches, in the same order, as a single process with the same global batch size.
        """
        length = self._lengths(order)
        unit = self.batch_size * self.world_size
        n = order.numel()
        # a stable sort on (window index, length) keeps the windows in place and sorts inside each one
        key = (torch.arange(n) // (self.bucket_batches * unit)) * (int(length.max()) + 1 if n else 1) + length
        order = order[torch.sort(key, stable=True).indices]
        n_full = n // unit
        batches = order[: n_full * unit].view(n_full, unit)
        batches = batches[torch.randperm(n_full, generator=gen)]
        return torch.cat([batches.reshape(-1), order[n_full * unit :]])

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        for k in range(self.start_batch, len(self)):
            g = k * self.world_size + self.rank  # global batch index of this rank's k-th batch
            idx = order[g * self.batch_size : (g + 1) * self.batch_size]
            yield self.histories.gather(
                self.user[idx],
                self.position[idx],
                self.target[idx],
                self.label[idx],
                max_len=self.max_len,
                with_negatives=self.with_negatives,
            )
