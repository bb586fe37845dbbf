"""DHAN + GRU (paper Figure 3): the simplified DHAN with ``i_x`` from DIEN's interest extractor and evolution.

Shapes: B batch, T history length, S group slots, D item representation.

``X = [x, i_x, e_a]`` where ``x`` is the hierarchical attention's output above the item level (levels 2..L of each
dimension, on the raw history embeddings, as ``DHAN_DIEN/DHAN/model.py`` ``first_attention``/``second_attention``)
and ``i_x`` is DIEN's AUGRU final state (GRU extractor with its auxiliary loss → attention → AUGRU; see
:mod:`dhan.models.dien`). The hierarchy's own item-level vector is computed (its weights form the groups) but
not joined, as in the code. The auxiliary loss comes back in ``ModelOutput.aux_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dhan.batch import Batch
from dhan.models.common import Head, InterestProjection, ModelOutput
from dhan.models.dhan import DHAN, DHANConfig, explain_hierarchy
from dhan.models.dien import AUGRUUpdate, DIENConfig, InterestEvolution, dien_reference_common, wants_aux
from dhan.schema import Schema


@dataclass(frozen=True)
class DHANGRUConfig(DHANConfig):
    attention_query_projection: bool = True  # DIEN code: AUGRU attention query = PReLU(Dense(e_target))
    aux_hidden: tuple[int, ...] = (100, 50)  # DIEN code auxiliary_net
    aux_loss_weight: float = 1.0  # DIEN / DHAN_DIEN code: ctr_loss + aux_loss
    augru_update: AUGRUUpdate = "paper"  # "paper": DIEN Eq. 6; "reference-code": VecAttGRUCell's formula

    def dien_config(self) -> DIENConfig:
        return DIENConfig(
            attention_hidden=self.attention_hidden,
            attention_activation=self.attention_activation,
            attention_query_projection=self.attention_query_projection,
            aux_hidden=self.aux_hidden,
            aux_loss_weight=self.aux_loss_weight,
            augru_update=self.augru_update,
        )

    @classmethod
    def paper(cls) -> DHANGRUConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> DHANGRUConfig:
        """``DHAN_DIEN/DHAN/model.py`` ``Model_DHAN``: DIEN settings, separate level MLPs, no scaling, no LN."""
        return cls(**dien_reference_common(), augru_update="reference-code")


class DHANGRU(DHAN):
    needs_negatives: ClassVar[bool] = True

    def __init__(self, config: DHANGRUConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        self.evolution = InterestEvolution(d, config.dien_config())
        interest_dim = d * (1 + self.num_interest_vectors())
        self.interest = InterestProjection(config.interest_block, interest_dim)
        self.head = Head(d + interest_dim, config)

    def num_interest_vectors(self) -> int:
        return sum(p.num_levels - 1 for p in self.plans)  # levels above the item level; i_x comes from the GRU

    def _run(self, batch: Batch, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None, Any, torch.Tensor]:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        neg = self.embedding.negatives(batch) if with_aux else None  # (B, T, D)
        outs = self.hierarchy(batch, target, hist)
        i_x, aux, evo_weights = self.evolution(target, hist, batch.hist_mask, neg)  # (B, D), (), (B, T)
        above_items = [v for out in outs for v in out.pooled[1:]]  # each (B, D)
        interest = self.interest(torch.cat([*above_items, i_x], dim=-1))  # (B, (V+1)*D)
        logits = self.head(torch.cat([target, interest], dim=-1))  # (B,)
        return self.add_item_bias(logits, batch), aux, outs, evo_weights

    def forward(self, batch: Batch) -> ModelOutput:
        logits, aux, _, _ = self._run(batch, wants_aux(self, batch, self.config.aux_loss_weight))  # type: ignore[attr-defined]
        return ModelOutput(logits, aux)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Any]:
        """As :meth:`DHAN.explain`, plus ``"evolution_weights"`` (B, T): the attention gating DIEN's AUGRU."""
        _, _, outs, evo = self._run(batch, with_aux=False)
        return {**explain_hierarchy(self.plans, outs), "evolution_weights": evo}
