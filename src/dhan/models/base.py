"""Embedding&MLP baseline (DIN paper's "BaseModel"): the sum-pooled history joined with the target, then an MLP.

Shapes: B batch, T history length, D item representation (item ⊕ category).

Sources: DIN paper §4 (BaseModel); ``zhougr1993/DeepInterestNetwork`` ``base_model`` (BN → Dense over the pooled
history, head 80-40-1 sigmoid + item bias) for the ``reference-code`` preset. The history is sum-pooled over real
positions only (the DIEN code's ``his_sum`` also adds padding embeddings; we never do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dhan.batch import Batch
from dhan.models.common import CommonConfig, CTRModel, Head, InterestProjection, ModelOutput, masked_sum
from dhan.schema import Schema


@dataclass(frozen=True)
class BaseConfig(CommonConfig):
    """Embedding&MLP. All fields are the common ones (see :class:`~dhan.models.common.CommonConfig`)."""

    @classmethod
    def paper(cls) -> BaseConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> BaseConfig:
        return cls(**reference_code_common())


def reference_code_common() -> dict[str, Any]:
    """The common-field values of the DIN-generation reference graphs (DHAN_DIN/{din,pnn,wide_deep,dhan})."""
    return {
        "embedding_init": "glorot_uniform",
        "head_hidden": (80, 40),
        "head_activation": "sigmoid",
        "head_output": "logit",
        "head_input_norm": "tf-affine",
        "item_bias": True,
        "interest_block": "bn-dense",
    }


class BaseModel(CTRModel):
    """x = [e_target, Σ_t e_t] → MLP → logit."""

    def __init__(self, config: BaseConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        self.interest = InterestProjection(config.interest_block, d)
        self.head = Head(2 * d, config)

    def forward(self, batch: Batch) -> ModelOutput:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        pooled = self.interest(masked_sum(hist, batch.hist_mask))  # (B, D)
        logits = self.head(torch.cat([target, pooled], dim=-1))  # (B,)
        return ModelOutput(self.add_item_bias(logits, batch))
