"""DIN (Zhou et al., KDD 2018): the target item activates the history through a local activation unit.

Shapes: B batch, T history length, D item representation (item ⊕ category), H attention hidden width.

``w_t = a(e_target, e_t)`` with ``a`` an MLP on ``[q, k, q-k, q*k]`` (80σ-40σ-1); the interest ``v = Σ_t w_t e_t``;
head input ``[e_target, v]``. Sources per default (see the config fields): the DIN paper uses raw (unnormalised)
weights and a 200-80-2 PReLU/Dice head; the DIN code (and DHAN's copy, ``DHAN_DIN/din/model.py``) uses a masked
softmax with 1/sqrt(D) scaling, ``BN → Dense`` on ``v`` and an 80-40-1 sigmoid head plus item bias. Reference
deviation not reproduced: the unshared, untrained BN of the negative tower (label leak, reference-code-notes §0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from dhan.batch import Batch
from dhan.layers import ActivationUnit, AttentionActivation, normalize_scores
from dhan.models.base import reference_code_common
from dhan.models.common import CommonConfig, CTRModel, Head, InterestProjection, ModelOutput
from dhan.schema import Schema


@dataclass(frozen=True)
class DINConfig(CommonConfig):
    attention_hidden: tuple[int, ...] = (80, 40)  # DIN code/paper activation unit: 80 -> 40 -> 1
    attention_activation: AttentionActivation = "sigmoid"  # DIN/DHAN code: sigmoid (DIN paper figure: PReLU)
    attention_normalization: Literal["softmax", "none"] = "none"  # DIN paper: raw weights; DIN/DHAN code: softmax
    attention_scaled: bool = False  # DIN-gen code divides scores by sqrt(D) (sqrt(128)); DIN paper and DIEN code: no

    @classmethod
    def paper(cls) -> DINConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> DINConfig:
        return cls(**reference_code_common(), attention_normalization="softmax", attention_scaled=True)


class DIN(CTRModel):
    broadcasts_history: ClassVar[bool] = True

    def __init__(self, config: DINConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        bias = config.attention_normalization != "softmax"  # a bias before a softmax cancels out
        self.attention = ActivationUnit(d, config.attention_hidden, config.attention_activation, bias)
        self.scale = 1.0 / math.sqrt(d) if config.attention_scaled else 1.0
        self.interest = InterestProjection(config.interest_block, d)
        self.head = Head(2 * d, config)
        self.normalization = config.attention_normalization

    def attend(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        scores = self.attention(target, hist) * self.scale  # (B, T)
        weights = normalize_scores(scores, batch.hist_mask, self.normalization)  # (B, T)
        interest = torch.matmul(weights[:, None, :], hist).squeeze(1)  # (B, D); hist may be (1, T, D)
        return target, interest, weights

    def forward(self, batch: Batch) -> ModelOutput:
        target, interest, _ = self.attend(batch)
        logits = self.head(torch.cat([target, self.interest(interest)], dim=-1))  # (B,)
        return ModelOutput(self.add_item_bias(logits, batch))

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Any]:
        """``{"item_weights": (B, T)}``: the activation weight of every history item (0 on padding)."""
        return {"item_weights": self.attend(batch)[2]}
