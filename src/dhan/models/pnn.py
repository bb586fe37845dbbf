"""PNN (Qu et al. 2016) as the DIN/DHAN comparisons run it: inner product of target and pooled history.

Shapes: B batch, T history length, D item representation (item ⊕ category).

``u`` = masked mean of the history embeddings (the DIN-generation code: ``Dense128(BN(mean))``, kept by the
``reference-code`` preset's ``interest_block="bn-dense"``); head input ``[u, e_target, u * e_target]``, the
element-wise (inner-product) interaction of the DIN/DIEN code's PNN (reference-code-notes §5a/§5b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dhan.batch import Batch
from dhan.models.base import reference_code_common
from dhan.models.common import CommonConfig, CTRModel, Head, InterestProjection, ModelOutput, masked_mean
from dhan.schema import Schema


@dataclass(frozen=True)
class PNNConfig(CommonConfig):
    """PNN. All fields are the common ones (see :class:`~dhan.models.common.CommonConfig`)."""

    @classmethod
    def paper(cls) -> PNNConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> PNNConfig:
        return cls(**reference_code_common())


class PNN(CTRModel):
    def __init__(self, config: PNNConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        self.interest = InterestProjection(config.interest_block, d)
        self.head = Head(3 * d, config)

    def forward(self, batch: Batch) -> ModelOutput:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        u = self.interest(masked_mean(hist, batch.hist_mask))  # (B, D)
        logits = self.head(torch.cat([u, target, u * target], dim=-1))  # (B,)
        return ModelOutput(self.add_item_bias(logits, batch))
