"""Wide & Deep (Cheng et al. 2016) as the DIN/DHAN comparisons run it.

Shapes: B batch, T history length, D item representation (item ⊕ category).

Deep part: ``[e_target, u]`` through the MLP head, ``u`` the masked mean of the history embeddings. Wide part: one
linear layer over ``[e_target, u, e_target * u]`` (the DIEN code's wide input, ``Dense2([x, his_sum, x*his_sum])``;
the DIN-generation code used three hand-picked products ``u[0]x[0], u[127]x[127], u[64]x[64]``, reference-code-notes
§5a, which this generalises). Logit = deep + wide (+ item bias in the ``reference-code`` preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dhan.batch import Batch
from dhan.models.base import reference_code_common
from dhan.models.common import CommonConfig, CTRModel, Head, InterestProjection, ModelOutput, masked_mean
from dhan.schema import Schema


@dataclass(frozen=True)
class WideDeepConfig(CommonConfig):
    """Wide & Deep. All fields are the common ones (see :class:`~dhan.models.common.CommonConfig`)."""

    @classmethod
    def paper(cls) -> WideDeepConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> WideDeepConfig:
        return cls(**reference_code_common())


class WideDeep(CTRModel):
    def __init__(self, config: WideDeepConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        self.interest = InterestProjection(config.interest_block, d)
        self.head = Head(2 * d, config)
        self.wide = nn.Linear(3 * d, 1)

    def forward(self, batch: Batch) -> ModelOutput:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        mean = masked_mean(hist, batch.hist_mask)  # (B, D)
        deep = self.head(torch.cat([target, self.interest(mean)], dim=-1))  # (B,)
        wide = self.wide(torch.cat([target, mean, target * mean], dim=-1)).squeeze(-1)  # (B,)
        return ModelOutput(self.add_item_bias(deep + wide, batch))
