"""DHAN (Xu et al., SIGIR 2020): hierarchical attention over the behaviour history, by item attribute.

Shapes: B batch, T history length, S group slots per row (= T), D item representation (item ⊕ attributes),
L attention levels of one dimension, K dimensions.

Paper §2.1 (general DHAN): for each *dimension* (category path, brand, price band, ...) an attention chain.
Level 1 attends over the history items with the target as query (activation unit on ``[q, k, q-k, q*k]``),
``w = softmax(a(e_target, e_t))``, ``i_x = Σ_t w_t e_t``. Level ``l+1`` groups the level-``l`` units by their
level-``(l+1)`` attribute (level 2: the item's category; level 3: the category's parent ...), forms each group
vector by Eq. 2, ``c_g = Σ_{u∈g} w_u v_u / Σ_{u∈g} w_u``, and attends over the groups present in the row with the
same query: ``x_{l+1} = Σ_g α_g c_g``. The representation joins the target embedding, each dimension's item-level
vector and every level's vector of every dimension, then an MLP head.

``levels`` is the maximum number of attention levels per dimension, the item level included; a dimension uses
``min(levels, 1 + number of attribute levels it has in the schema)``. The default is the paper's *simplified
DHAN* (§2.2, Figure 2): one dimension ``category``, two levels, ``X = [x, i_x, e_a]``.

Design decisions the paper leaves open (reference-code-notes §10): the query of every level is the target item
representation (DHAN_DIN code); each dimension has its own level-1 attention (Figure 1 draws one Attention Module 1
per tree); groups are the ones present in each row (sort → slot ids → scatter), so cost and results do not depend on
how many categories the dataset has, where the code loops over every category of the dataset. Faithfulness
switches (softmax, scaling, shared level MLP, level-2 LayerNorm, TF BatchNorm, head) are config fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from dhan.batch import Batch
from dhan.layers import AttentionActivation, AttentionOptions, HierarchicalAttention, HierarchicalAttentionOutput
from dhan.models.base import reference_code_common
from dhan.models.common import CommonConfig, CTRModel, Head, InterestProjection, ModelOutput, resolve_attributes
from dhan.schema import Schema


@dataclass(frozen=True)
class DHANConfig(CommonConfig):
    dimensions: tuple[str, ...] = ("category",)  # paper §2.2: one dimension, category (all DHAN code)
    levels: int = 2  # attention levels per dimension incl. the item level; paper §2.2 / all DHAN code: 2
    attention_hidden: tuple[int, ...] = (80, 40)  # DHAN_DIN f1_att/f2_att/f3_att: 80σ -> 40σ -> 1
    attention_activation: AttentionActivation = "sigmoid"  # every DHAN attention MLP
    # "softmax": masked softmax at every level (both DHAN code bases; the paper's W and W_c are attention weights);
    # "none": raw activation-unit outputs (DIN paper); Eq. 2 then divides by a sum that can be near 0.
    attention_normalization: Literal["softmax", "none"] = "softmax"
    attention_scaled: bool = False  # scores / sqrt(D): DHAN_DIN code (sqrt(128)); DHAN_DIEN code and paper: no
    share_level_mlp: bool = False  # all levels share one activation unit: DHAN_DIN (AUTO_REUSE); DHAN_DIEN: separate
    # LayerNorm on the input [q, c, q-c, q*c] of levels >= 2, jointly over (groups, 4D) with γ/β of size 4D and
    # eps 1e-12: DHAN_DIN code (tf.contrib layer_norm). Its statistics here use the groups present in the row, the
    # code's use every dataset category (empty ones as zero rows), so the numbers differ; see layers.py.
    group_layer_norm: bool = False
    group_eps: float = 1e-10  # Eq. 2 denominator epsilon (DHAN_DIN eps = 1e-10)
    join_item_level: bool = True  # join i_x into X (paper §2.2 against over-centralisation); False = HAN only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels < 1:
            raise ValueError(f"model.levels must be >= 1 (the item level); got {self.levels}")
        if not self.dimensions:
            raise ValueError("model.dimensions is empty; name at least one, e.g. --set model.dimensions=category")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"model.dimensions has duplicates: {self.dimensions}")

    @property
    def attention_options(self) -> AttentionOptions:
        return AttentionOptions(
            hidden=self.attention_hidden,
            activation=self.attention_activation,
            normalization=self.attention_normalization,
            scaled=self.attention_scaled,
            share_level_mlp=self.share_level_mlp,
            group_layer_norm=self.group_layer_norm,
            eps=self.group_eps,
        )

    @classmethod
    def paper(cls) -> DHANConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> DHANConfig:
        """The released ``DHAN_DIN/dhan/model.py``: shared level MLP, /sqrt(128), level-2 LN, LN-BN-Dense256 block,
        affine BN, 80-40-1 sigmoid head plus item bias, glorot embeddings (reference-code-notes §1)."""
        common = {**reference_code_common(), "interest_block": "ln-bn-dense"}
        return cls(**common, attention_scaled=True, share_level_mlp=True, group_layer_norm=True)


@dataclass(frozen=True)
class DimensionPlan:
    """One attention chain: its dimension, its number of levels and the attribute column of each level above 1."""

    dimension: str
    attributes: tuple[str, ...]  # attribute grouping level 2, 3, ... (fine to coarse)
    columns: tuple[int, ...]  # their columns in Batch.hist_attrs

    @property
    def num_levels(self) -> int:
        return 1 + len(self.attributes)


def plan_dimensions(config: DHANConfig, schema: Schema) -> tuple[DimensionPlan, ...]:
    plans = []
    for dim in config.dimensions:
        if dim not in schema.dimensions:
            raise ValueError(
                f"model.dimensions names {dim!r}, which this dataset does not have; it has dimensions "
                f"{list(schema.dimensions)}. Set --set model.dimensions=... to some of those."
            )
        attrs = tuple(a.name for a in schema.dimension_levels(dim))[: config.levels - 1]
        plans.append(DimensionPlan(dim, attrs, tuple(schema.attribute_index(a) for a in attrs)))
    return tuple(plans)


class DHAN(CTRModel):
    broadcasts_history: ClassVar[bool] = True

    def __init__(self, config: DHANConfig, schema: Schema) -> None:
        plans = plan_dimensions(config, schema)
        level1 = tuple(schema.dimension_levels(p.dimension)[0].name for p in plans)
        super().__init__(config, schema, resolve_attributes(config, schema, default=level1))
        self.plans = plans
        d = self.embedding.dim
        options = config.attention_options
        self.hierarchies = nn.ModuleList(HierarchicalAttention(d, p.num_levels, options) for p in plans)
        self.join_item_level = config.join_item_level
        interest_dim = d * self.num_interest_vectors()
        self.interest = InterestProjection(config.interest_block, interest_dim)
        self.head = Head(d + interest_dim, config)

    def num_interest_vectors(self) -> int:
        per_dim = (p.num_levels - (0 if self.join_item_level else 1) for p in self.plans)
        return sum(per_dim)

    def hierarchy(self, batch: Batch, target: Tensor, hist: Tensor) -> list[HierarchicalAttentionOutput]:
        outs = []
        for plan, han in zip(self.plans, self.hierarchies, strict=True):
            groups = batch.hist_attrs[..., list(plan.columns)]  # (B, T, L-1) group id of each item per level
            outs.append(han(target, hist, batch.hist_mask, groups))
        return outs

    def interest_vectors(self, outs: list[HierarchicalAttentionOutput]) -> list[Tensor]:
        start = 0 if self.join_item_level else 1
        return [v for out in outs for v in out.pooled[start:]]  # each (B, D)

    def forward(self, batch: Batch) -> ModelOutput:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        outs = self.hierarchy(batch, target, hist)
        interest = self.interest(torch.cat(self.interest_vectors(outs), dim=-1))  # (B, V*D)
        logits = self.head(torch.cat([target, interest], dim=-1))  # (B,)
        return ModelOutput(self.add_item_bias(logits, batch))

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Any]:
        """Attention weights of every level, for Figure-4-style plots. Returns::

            {"item_weights": (B, T),                      # level-1 weights of the first dimension
             "dimensions": {name: {"item_weights": (B, T),
                                   "levels": [{"level": 2, "attribute": "category",
                                               "weights": (B, S), "group_ids": (B, S), "group_mask": (B, S)},
                                              ...]}}}

        ``group_ids`` are the attribute's vocabulary ids (0 on unused slots, where ``group_mask`` is False and the
        weight is 0); map them to names with the prepared dataset's attribute vocabulary.
        """
        target = self.embedding.target(batch)
        outs = self.hierarchy(batch, target, self.embedding.history(batch))
        return explain_hierarchy(self.plans, outs)


def explain_hierarchy(plans: tuple[DimensionPlan, ...], outs: list[HierarchicalAttentionOutput]) -> dict[str, Any]:
    dims: dict[str, Any] = {}
    for plan, out in zip(plans, outs, strict=True):
        levels = [
            {
                "level": level + 1,
                "attribute": plan.attributes[level - 1],
                "weights": out.weights[level],
                "group_ids": out.group_ids[level],
                "group_mask": out.group_mask[level],
            }
            for level in range(1, plan.num_levels)
        ]
        dims[plan.dimension] = {"item_weights": out.weights[0], "levels": levels}
    return {"item_weights": outs[0].weights[0], "dimensions": dims}
