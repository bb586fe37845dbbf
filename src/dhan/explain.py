"""Explanations of one score in raw ids and names: item-level and group-level (category) attention of one user.

The models' ``explain(batch)`` returns tensors: ``item_weights`` (B, T) for every attention model, and for DHAN
the group weights and group ids of every level of every dimension. This module picks one user's sample, calls
``explain`` and turns ids into the dataset's raw item ids and attribute names (the paper's Figure 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dhan.batch import Batch
from dhan.data.loader import HistoryTensors
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.schema import FIRST_ID


@dataclass
class GroupAttention:
    """One level of one dimension: the weight of each group (e.g. category) present in the history."""

    dimension: str
    level: int
    attribute: str  # the attribute whose values are the groups, e.g. "category"
    names: list[str]
    weights: list[float]


@dataclass
class Explanation:
    user: str
    target: str
    target_attributes: dict[str, str]
    label: int | None
    probability: float
    items: list[dict[str, Any]]  # history items with their weight, most recent last
    groups: list[GroupAttention] = field(default_factory=list)

    def top_items(self, k: int) -> list[dict[str, Any]]:
        return sorted(self.items, key=lambda r: -r["weight"])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "target": self.target,
            "target_attributes": self.target_attributes,
            "label": self.label,
            "probability": self.probability,
            "items": self.items,
            "groups": [g.__dict__ for g in self.groups],
        }


def user_index(data: PreparedData, raw_user: str) -> int:
    try:
        return data.user_raw_ids.index(raw_user)
    except ValueError:
        examples = ", ".join(data.user_raw_ids[:3])
        raise UserError(f"--user {raw_user!r} is not in this dataset (raw user ids look like: {examples})") from None


def item_index(data: PreparedData, raw_item: str) -> int:
    try:
        idx = data.item_raw_ids.index(raw_item)
    except ValueError:
        idx = -1
    if idx < FIRST_ID:
        examples = ", ".join(data.item_raw_ids[FIRST_ID : FIRST_ID + 3])
        raise UserError(f"--target {raw_item!r} is not in this dataset (raw item ids look like: {examples})")
    return idx


def sample_batch(data: PreparedData, user: int, target: int | None, with_negatives: bool) -> tuple[Batch, int | None]:
    """The batch of one sample: the user's test positive by default, else ``target`` after the test history.

    Returns the batch and the sample's label (None for a target that is not a stored sample).
    """
    test = data.split("test")
    rows = np.flatnonzero(test.user == user)
    if target is None:
        pos = rows[test.label[rows] == 1]
        if pos.size == 0:
            raise UserError(f"user {data.user_raw_ids[user]!r} has no positive test sample; pass --target ITEM")
        row = int(pos[0])
        position, target, label = int(test.position[row]), int(test.target[row]), 1
    else:
        match = rows[test.target[rows] == target]
        if match.size:
            row = int(match[0])
            position, label_opt = int(test.position[row]), int(test.label[row])
        else:
            # a free target: score it against the user's whole stored history
            position = int(data.offsets[user + 1] - data.offsets[user])
            label_opt = None
        label = label_opt  # type: ignore[assignment]
    hist = HistoryTensors(data)
    batch = hist.gather(
        torch.tensor([user]),
        torch.tensor([position]),
        torch.tensor([target]),
        None if label is None else torch.tensor([float(label)]),
        with_negatives=with_negatives,
    )
    return batch, label


def _row(value: Any) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    return arr[0] if arr.ndim >= 1 and arr.shape[0] == 1 else arr


def _group_levels(expl: Mapping[str, Any], data: PreparedData) -> list[GroupAttention]:
    """The group levels of DHAN's ``explain`` output (``{"dimensions": {dim: {"levels": [...]}}}``), row 0."""
    found: list[GroupAttention] = []
    for dimension, dim_out in (expl.get("dimensions") or {}).items():
        for lvl in dim_out.get("levels", []):
            attribute = str(lvl["attribute"])
            ids = _row(lvl["group_ids"]).astype(np.int64)
            weights = _row(lvl["weights"]).astype(np.float64)
            mask = _row(lvl["group_mask"]).astype(bool) if "group_mask" in lvl else ids >= FIRST_ID
            vocab = data.attribute_values.get(attribute, [])
            names = [vocab[g] if 0 <= g < len(vocab) else str(g) for g in ids[mask].tolist()]
            found.append(GroupAttention(str(dimension), int(lvl["level"]), attribute, names, weights[mask].tolist()))
    return found


@torch.no_grad()
def explain_sample(model: nn.Module, data: PreparedData, raw_user: str, raw_target: str | None = None) -> Explanation:
    """Score one (user, target) and return its attention in raw ids and names."""
    explain = getattr(model, "explain", None)
    if explain is None:
        raise UserError(f"model {type(model).__name__} has no attention to explain; use an attention model (din, dhan)")
    from dhan.train import model_output, needs_negatives

    u = user_index(data, raw_user)
    t = None if raw_target is None else item_index(data, raw_target)
    batch, label = sample_batch(data, u, t, needs_negatives(model))
    device = next(model.parameters()).device
    batch = batch.to(device)
    model.eval()
    logit, _ = model_output(model(batch))
    expl = explain(batch)
    names = data.schema.attribute_names
    target_id = int(batch.target_item[0])
    target_attrs = {n: data.attribute_values[n][int(data.item_attrs[target_id, a])] for a, n in enumerate(names)}
    items: list[dict[str, Any]] = []
    weights = _row(expl["item_weights"]) if "item_weights" in expl else None
    hist = batch.hist_items[0].cpu().numpy()
    mask = batch.hist_mask[0].cpu().numpy()
    for j in np.flatnonzero(mask):
        item = int(hist[j])
        row: dict[str, Any] = {"position": int(j), "item": data.item_raw_ids[item]}
        for a, n in enumerate(names):
            row[n] = data.attribute_values[n][int(data.item_attrs[item, a])]
        row["weight"] = float(weights[j]) if weights is not None else float("nan")
        items.append(row)
    return Explanation(
        user=raw_user,
        target=data.item_raw_ids[target_id],
        target_attributes=target_attrs,
        label=label,
        probability=float(torch.sigmoid(logit[0].double())),
        items=items,
        groups=_group_levels(expl, data),
    )
