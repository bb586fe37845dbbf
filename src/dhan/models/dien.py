"""DIEN (Zhou et al., AAAI 2019): GRU interest extractor with auxiliary loss, attention, AUGRU interest evolution.

Shapes: B batch, T history length, D item representation (item ⊕ category), H GRU hidden (= D).

1. Interest extractor: ``h_t = GRU(e_t)`` (``nn.GRU`` over the right-padded history: the outputs at real positions
   depend only on earlier real steps, so padding changes nothing; padded outputs are never used).
2. Auxiliary loss: for each pair of consecutive real steps, ``h_t`` should score the next clicked item ``e_{t+1}``
   above the sampled negative ``ê_{t+1}``: ``-log σ(f(h_t, e_{t+1})) - log(1 - σ(f(h_t, ê_{t+1})))`` with ``f`` an
   MLP on ``[h, e]`` (100σ-50σ-1; the code's 2-unit softmax is the same as one logit), **averaged over real steps
   only** (the DIEN code averages over all ``B x (T-1)`` positions with padded ones as zeros; reference-code-notes
   §4.2). Returned multiplied by ``aux_loss_weight`` (code: 1).
3. Attention: ``a_t = softmax_t(MLP([q, h_t, q-h_t, q*h_t]))`` with ``q = PReLU(Dense(e_target))`` (DIEN code), no
   scaling.
4. AUGRU: ``u'_t = a_t u_t``, ``h'_t = (1 - u'_t) h'_{t-1} + u'_t h~_t`` (DIEN paper Eq. 6; ``augru_update="paper"``).
   The DIEN code's ``VecAttGRUCell`` computes something else (TF's gate weights the *old* state and is scaled by
   ``1 - a``; ``augru_update="reference-code"``). Padded steps carry the state unchanged in both.
5. Head input ``[e_target, Σ_t e_t, e_target * Σ_t e_t, h'_final]`` (DIEN code without the user embedding; the sum
   over real steps only, the code also sums padding).

PyTorch's GRU gate convention is used (``h = (1 - z) n + z h_prev``); biases keep PyTorch's init (TF's code starts
the gate bias at 1). The one set of parameters scores positives and negatives alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhan.batch import Batch
from dhan.layers import MLP, ActivationUnit, AttentionActivation, PReLU, masked_softmax
from dhan.models.common import CommonConfig, CTRModel, Head, ModelOutput, masked_sum
from dhan.schema import Schema

AUGRUUpdate = Literal["paper", "reference-code"]


@dataclass(frozen=True)
class DIENConfig(CommonConfig):
    attention_hidden: tuple[int, ...] = (80, 40)  # DIEN code din_fcn_attention: 80σ -> 40σ -> 1
    attention_activation: AttentionActivation = "sigmoid"  # DIEN code
    attention_query_projection: bool = True  # DIEN code: q = PReLU(Dense_H(e_target)); False: q = e_target
    aux_hidden: tuple[int, ...] = (100, 50)  # DIEN code auxiliary_net: 100σ -> 50σ -> 2 (softmax) == one logit
    aux_loss_weight: float = 1.0  # DIEN code: loss = ctr_loss + aux_loss
    augru_update: AUGRUUpdate = "paper"  # "paper": DIEN Eq. 6; "reference-code": VecAttGRUCell's formula

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be >= 0; got {self.aux_loss_weight}")

    @classmethod
    def paper(cls) -> DIENConfig:
        return cls()

    @classmethod
    def reference_code(cls) -> DIENConfig:
        return cls(**dien_reference_common(), augru_update="reference-code")


def dien_reference_common() -> dict[str, Any]:
    """Common-field values of the DIEN-generation code (``mouna99/dien``, ``DHAN_DIEN/DHAN``)."""
    return {
        "item_embedding_dim": 18,  # EMBEDDING_DIM = 18
        "attribute_embedding_dim": 18,
        "embedding_init": "glorot_uniform",
        "head_hidden": (200, 80),
        "head_activation": "dice",
        "dice_variant": "batch",
        "head_output": "softmax2",
        "head_input_norm": "tf-affine",
    }


class AUGRU(nn.Module):
    """GRU with attentional update gate. ``forward(inputs (B,T,I), attention (B,T), mask (B,T)) -> (B, H)`` final state.

    ``update="paper"``: ``h = (1 - a z) h_prev + a z n``. ``update="reference-code"``: ``g = (1 - a) z``,
    ``h = g h_prev + (1 - g) n`` (``VecAttGRUCell``: TF's gate ``z`` weights the old state). ``r``, ``z``, ``n`` as
    in ``nn.GRU``. Steps where ``mask`` is False leave the state unchanged.
    """

    def __init__(self, input_size: int, hidden_size: int, update: AUGRUUpdate = "paper") -> None:
        super().__init__()
        if update not in ("paper", "reference-code"):
            raise ValueError(f"augru_update must be 'paper' or 'reference-code'; got {update!r}")
        self.hidden_size = hidden_size
        self.update = update
        self.input_proj = nn.Linear(input_size, 3 * hidden_size)  # x -> [r, z, n] parts (with b_i*)
        self.hidden_proj = nn.Linear(hidden_size, 3 * hidden_size)  # h -> [r, z, n] parts (with b_h*)

    def step(self, x_proj: Tensor, h: Tensor, a: Tensor) -> Tensor:
        """One step. Shapes: ``x_proj`` (B, 3H) = input_proj(x_t), ``h`` (B, H), ``a`` (B, 1) -> (B, H)."""
        xr, xz, xn = x_proj.chunk(3, dim=-1)
        hr, hz, hn = self.hidden_proj(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        if self.update == "paper":
            u = a * z
            return (1.0 - u) * h + u * n
        g = (1.0 - a) * z
        return g * h + (1.0 - g) * n

    def forward(self, inputs: Tensor, attention: Tensor, mask: Tensor) -> Tensor:
        b = attention.shape[0]  # inputs and mask may have batch size 1 (one history, b candidates): broadcast
        x_proj = self.input_proj(inputs)  # (B, T, 3H), all steps at once
        h = inputs.new_zeros(b, self.hidden_size)  # (B, H)
        # unbind once: indexing x_proj[:, i] in the loop makes every step's backward allocate and add a whole
        # (B, T, 3H) zero gradient (measured 60% of a DIEN training step at T=50); unbind's backward stacks once.
        steps = zip(x_proj.unbind(1), attention[..., None].unbind(1), mask[..., None].unbind(1), strict=True)
        for x_t, a_t, m_t in steps:
            h = torch.where(m_t, self.step(x_t, h, a_t), h)  # padded step: carry the state
        return h


class InterestEvolution(nn.Module):
    """DIEN's interest path: GRU extractor (+ auxiliary loss), attention on its states, AUGRU final state.

    ``forward(target (B,D), hist (B,T,D), mask (B,T), neg_hist (B,T,D) | None) -> (final (B,D), aux | None, a (B,T))``.
    """

    def __init__(self, dim: int, config: DIENConfig) -> None:
        super().__init__()
        self.extractor = nn.GRU(dim, dim, batch_first=True)
        self.aux_net = MLP(2 * dim, config.aux_hidden, "sigmoid", out_dim=1)
        self.query_projection: nn.Module = (
            nn.Sequential(nn.Linear(dim, dim), PReLU(dim, init=0.1))  # DIEN code: PReLU α init 0.1
            if config.attention_query_projection
            else nn.Identity()
        )
        self.attention = ActivationUnit(dim, config.attention_hidden, config.attention_activation, output_bias=False)
        self.evolution = AUGRU(dim, dim, config.augru_update)
        self.aux_loss_weight = config.aux_loss_weight

    def forward(
        self, target: Tensor, hist: Tensor, mask: Tensor, neg_hist: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        states, _ = self.extractor(hist)  # (B, T, D); rows are right-padded, so real outputs ignore padding
        aux = None
        if neg_hist is not None and self.aux_loss_weight > 0:
            aux = self.aux_loss_weight * self.auxiliary_loss(states, hist, neg_hist, mask)
        query = self.query_projection(target)  # (B, D)
        weights = masked_softmax(self.attention(query, states), mask)  # (B, T)
        final = self.evolution(states, weights, mask)  # (B, D)
        return final, aux, weights

    def auxiliary_loss(self, states: Tensor, hist: Tensor, neg_hist: Tensor, mask: Tensor) -> Tensor:
        """Mean over real consecutive steps of the next-click BCE (positive vs sampled negative). Scalar."""
        step_mask = (mask[:, 1:] & mask[:, :-1]).to(states.dtype)  # (B, T-1)
        h = states[:, :-1]  # (B, T-1, D)
        pos = self.aux_net(torch.cat([h, hist[:, 1:]], dim=-1)).squeeze(-1)  # (B, T-1)
        neg = self.aux_net(torch.cat([h, neg_hist[:, 1:]], dim=-1)).squeeze(-1)  # (B, T-1)
        per_step = F.softplus(-pos) + F.softplus(neg)  # -log σ(pos) - log(1 - σ(neg))
        per_step = per_step.masked_fill(step_mask == 0, 0.0)  # padded steps: exactly nothing (even if non-finite)
        return per_step.sum() / step_mask.sum().clamp(min=1.0)


class DIEN(CTRModel):
    needs_negatives: ClassVar[bool] = True
    broadcasts_history: ClassVar[bool] = True

    def __init__(self, config: DIENConfig, schema: Schema) -> None:
        super().__init__(config, schema)
        d = self.embedding.dim
        self.interest = InterestEvolution(d, config)
        self.head = Head(4 * d, config)

    def _run(self, batch: Batch, with_aux: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        target = self.embedding.target(batch)  # (B, D)
        hist = self.embedding.history(batch)  # (B, T, D)
        neg = self.embedding.negatives(batch) if with_aux else None  # (B, T, D)
        final, aux, weights = self.interest(target, hist, batch.hist_mask, neg)  # (B, D), (), (B, T)
        hist_sum = masked_sum(hist, batch.hist_mask).expand_as(target)  # (B, D) (history may be a batch of 1)
        logits = self.head(torch.cat([target, hist_sum, target * hist_sum, final], dim=-1))  # (B,)
        return self.add_item_bias(logits, batch), aux, weights

    def forward(self, batch: Batch) -> ModelOutput:
        with_aux = wants_aux(self, batch, self.config.aux_loss_weight)  # type: ignore[attr-defined]
        logits, aux, _ = self._run(batch, with_aux)
        return ModelOutput(logits, aux)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Any]:
        """``{"item_weights": (B, T)}``: the attention weights that gate the AUGRU (0 on padding)."""
        return {"item_weights": self._run(batch, with_aux=False)[2]}


def wants_aux(model: nn.Module, batch: Batch, weight: float) -> bool:
    """Whether to compute the auxiliary loss: when negatives are present and the weight is > 0.

    Training without negatives is an error (the loss would silently drop); eval without them is fine.
    """
    if weight <= 0:
        return False
    if batch.neg_hist_items is None:
        if model.training:
            raise ValueError(
                f"{type(model).__name__} is training with aux_loss_weight={weight} but the batch has no "
                "neg_hist_items; build batches with with_negatives=True or set --set model.aux_loss_weight=0"
            )
        return False
    return True
