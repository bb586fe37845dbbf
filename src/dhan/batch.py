"""The typed batch every model takes.

Shapes: B batch, T history length (at most ``schema.max_len``), A attribute columns (``schema.attribute_names``).

Layout decisions (the same everywhere):

* Histories are **chronological and right-padded**: ``hist_items[b, :n_b]`` are the user's ``n_b`` most recent
  behaviours, oldest first, and ``hist_items[b, n_b:]`` is padding (id 0). This suits GRUs (DIEN) and makes
  "append padding on the right" a no-op that tests can check.
* ``hist_mask`` is a bool tensor, True for a real behaviour. It is built once, by the loader; models never
  recompute it from ids or embeddings.
* Attribute ids are carried explicitly (not looked up inside the model) so that a scoring request can bring the
  attributes of an item the model has never seen.
* ``neg_hist_items`` holds, for every history position, one sampled item the user never interacted with
  (DIEN's auxiliary loss). It is ``None`` when no model in use needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    target_item: Tensor  # (B,) int64
    target_attrs: Tensor  # (B, A) int64
    hist_items: Tensor  # (B, T) int64, right-padded with 0
    hist_attrs: Tensor  # (B, T, A) int64, 0 where padded
    hist_mask: Tensor  # (B, T) bool, True = real behaviour
    label: Tensor | None = None  # (B,) float32 in {0, 1}
    neg_hist_items: Tensor | None = None  # (B, T) int64, one sampled negative per history position
    neg_hist_attrs: Tensor | None = None  # (B, T, A) int64
    user: Tensor | None = None  # (B,) int64 user index: for GAUC and explanations, never a model input

    @property
    def size(self) -> int:
        return int(self.target_item.shape[0])

    @property
    def hist_len(self) -> int:
        return int(self.hist_items.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        pinned = {
            f.name: (v.pin_memory() if isinstance(v, Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**pinned)

    def with_padding(self, extra: int) -> Batch:
        """The same batch with ``extra`` more padded positions on the right (for invariance tests)."""
        if extra <= 0:
            return self

        def pad(t: Tensor) -> Tensor:
            shape = list(t.shape)
            shape[1] = extra
            return torch.cat([t, torch.zeros(shape, dtype=t.dtype, device=t.device)], dim=1)

        return replace(
            self,
            hist_items=pad(self.hist_items),
            hist_attrs=pad(self.hist_attrs),
            hist_mask=pad(self.hist_mask),
            neg_hist_items=None if self.neg_hist_items is None else pad(self.neg_hist_items),
            neg_hist_attrs=None if self.neg_hist_attrs is None else pad(self.neg_hist_attrs),
        )

    def validate(self, num_attributes: int | None = None) -> None:
        """Check shapes and dtypes; raise ``ValueError`` saying what is wrong and what was expected."""
        b = self.size
        if self.target_item.dim() != 1:
            raise ValueError(f"target_item has shape {tuple(self.target_item.shape)}; expected (B,)")
        if self.hist_items.dim() != 2 or self.hist_items.shape[0] != b:
            raise ValueError(f"hist_items has shape {tuple(self.hist_items.shape)}; expected ({b}, T)")
        t = self.hist_len
        if self.hist_mask.shape != (b, t) or self.hist_mask.dtype != torch.bool:
            raise ValueError(
                f"hist_mask has shape {tuple(self.hist_mask.shape)} and dtype {self.hist_mask.dtype}; "
                f"expected ({b}, {t}) bool"
            )
        a = self.target_attrs.shape[-1] if self.target_attrs.dim() == 2 else -1
        if self.target_attrs.shape != (b, a) or (num_attributes is not None and a != num_attributes):
            raise ValueError(
                f"target_attrs has shape {tuple(self.target_attrs.shape)}; expected ({b}, {num_attributes or 'A'})"
            )
        if self.hist_attrs.shape != (b, t, a):
            raise ValueError(f"hist_attrs has shape {tuple(self.hist_attrs.shape)}; expected ({b}, {t}, {a})")
        for name in ("target_item", "target_attrs", "hist_items", "hist_attrs"):
            if getattr(self, name).dtype != torch.int64:
                raise ValueError(f"{name} has dtype {getattr(self, name).dtype}; expected torch.int64")
        if self.label is not None and self.label.shape != (b,):
            raise ValueError(f"label has shape {tuple(self.label.shape)}; expected ({b},)")
        if self.neg_hist_items is not None and self.neg_hist_items.shape != (b, t):
            raise ValueError(f"neg_hist_items has shape {tuple(self.neg_hist_items.shape)}; expected ({b}, {t})")
        if self.neg_hist_attrs is not None and self.neg_hist_attrs.shape != (b, t, a):
            raise ValueError(f"neg_hist_attrs has shape {tuple(self.neg_hist_attrs.shape)}; expected ({b}, {t}, {a})")
        if bool((self.hist_items[self.hist_mask] == 0).any()):
            raise ValueError("hist_mask marks a padding item (id 0) as real")
