"""Generic building blocks shared by the models: MLP, Dice, TF-style BatchNorm, masked softmax, the DIN activation
unit and the reusable hierarchical (group-by-attribute) attention of DHAN.

Shapes: B batch, T history length, N units at one level (items at level 1, groups above), S group slots
(<= N: trimmed to the most any row of the batch uses),
D key/query dim, H attention hidden width, L attention levels, F features.

Nothing here knows about ``Batch`` or ``Schema``: every layer takes plain tensors, so the hierarchical attention
can be dropped into another codebase (see :class:`HierarchicalAttention`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["sigmoid", "relu", "prelu", "dice"]
AttentionActivation = Literal["sigmoid", "relu", "prelu"]
DiceVariant = Literal["running", "batch"]

TF_BN_EPSILON = 1e-3  # tf.layers.batch_normalization default epsilon
TF_LN_EPSILON = 1e-12  # tf.contrib.layers.layer_norm variance epsilon


# --------------------------------------------------------------------------------------------------------------------
# Normalisation and activations
# --------------------------------------------------------------------------------------------------------------------


class TFInferenceBatchNorm(nn.Module):
    """What ``tf.layers.batch_normalization`` computes in the reference code: a learned per-feature affine map.

    The authors' graphs never pass ``training=True`` and never run ``UPDATE_OPS``, so the moving mean stays 0 and
    the moving variance 1: ``y = gamma * x / sqrt(1 + 1e-3) + beta`` (reference-code-notes §1.5, §9.6). A PyTorch
    ``BatchNorm1d`` in train mode is *not* this. Works on any ``(..., F)`` input.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.scale = 1.0 / math.sqrt(1.0 + TF_BN_EPSILON)

    def forward(self, x: Tensor) -> Tensor:
        return x * (self.weight * self.scale) + self.bias


class Dice(nn.Module):
    """Dice activation (DIN paper, Eq. 9): ``y = p * x + alpha * (1 - p) * x`` with ``p = sigmoid(norm(x))``.

    ``variant``:

    * ``"running"`` (default): ``norm`` uses the batch statistics in training and running averages (momentum 0.1)
      in eval, like a BatchNorm without affine. This is the DIN paper's Dice and the only variant whose output for
      one row does not depend on the other rows at eval time, so serving and per-row scoring are well defined.
    * ``"batch"``: the DIEN code's Dice (``mouna99/dien`` ``Dice.py``): the current batch's mean and variance at
      train *and* eval time, no running averages. Faithful to the reference; scores then depend on the batch.

    ``alpha`` is per feature and starts at 0 (both references). Input ``(N, F)`` or ``(..., F)`` (statistics over
    all leading dims).
    """

    def __init__(self, num_features: int, variant: DiceVariant = "running", eps: float = 1e-8) -> None:
        super().__init__()
        if variant not in ("running", "batch"):
            raise ValueError(f"Dice variant must be 'running' or 'batch'; got {variant!r}")
        self.variant = variant
        self.eps = eps
        self.momentum = 0.1
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, F)
        if self.variant == "batch" or self.training:
            mean = flat.mean(dim=0)
            var = flat.var(dim=0, unbiased=False)
            if self.variant == "running" and self.training:
                with torch.no_grad():
                    n = flat.shape[0]
                    unbiased = var * (n / max(n - 1, 1))
                    # running statistics stay float32 under bf16 autocast
                    self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                    self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) * torch.rsqrt(var + self.eps))
        return x * (p + self.alpha * (1.0 - p))


class PReLU(nn.Module):
    """PReLU with one slope per feature of the *last* dim (``nn.PReLU`` uses dim 1, wrong for (B, T, F))."""

    def __init__(self, num_features: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), init))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, x * self.weight)


def make_activation(name: str, num_features: int, dice_variant: DiceVariant = "running") -> nn.Module:
    """An activation module by name: ``sigmoid``, ``relu``, ``prelu`` (one slope per feature, init 0.25) or ``dice``."""
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return PReLU(num_features)
    if name == "dice":
        return Dice(num_features, dice_variant)
    raise ValueError(f"unknown activation {name!r}; expected one of sigmoid, relu, prelu, dice")


class MLP(nn.Module):
    """Linear layers of widths ``dims`` with an activation after each; optionally a final linear ``out_dim`` layer.

    Shapes: ``(..., in_dim) -> (..., dims[-1])`` or ``(..., out_dim)`` when ``out_dim`` is given.
    """

    def __init__(
        self,
        in_dim: int,
        dims: tuple[int, ...],
        activation: Activation = "relu",
        out_dim: int | None = None,
        dice_variant: DiceVariant = "running",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for d in dims:
            layers += [nn.Linear(width, d), make_activation(activation, d, dice_variant)]
            width = d
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------------------------------
# Masked softmax and the activation unit
# --------------------------------------------------------------------------------------------------------------------


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` where ``mask`` is True; masked entries get weight 0 and fully masked rows are all 0.

    Masked scores are filled with ``finfo(dtype).min`` (not ``-2**32+1``), so a masked entry's weight is exactly 0
    whenever one entry is real. The softmax runs in float32 at least (bf16 autocast safe).

    Shapes: ``scores`` and ``mask`` broadcastable, e.g. ``(B, T)``; output like ``scores``.
    """
    work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    work = work.masked_fill(~mask, torch.finfo(work.dtype).min)
    weights = torch.softmax(work, dim=dim)
    weights = weights.masked_fill(~mask.any(dim=dim, keepdim=True), 0.0)  # a row with nothing real pools to 0
    return weights.to(scores.dtype)


def normalize_scores(scores: Tensor, mask: Tensor, normalization: Literal["softmax", "none"]) -> Tensor:
    """Attention weights from raw scores: masked softmax, or the raw scores with padding zeroed (DIN paper)."""
    if normalization == "softmax":
        return masked_softmax(scores, mask)
    return scores * mask.to(scores.dtype)


class MaskedGroupLayerNorm(nn.Module):
    """TF-contrib-style LayerNorm over the last two dims ``(S, F)`` jointly, statistics over real rows only.

    The released DHAN normalises the level-2 MLP input ``[B, C, 4D]`` jointly over ``C x 4D`` with ``gamma, beta``
    of size ``4D`` and epsilon 1e-12 (``tf.contrib.layers.layer_norm`` defaults; reference-code-notes §1.4). There
    ``C`` is every category of the dataset, empty ones (all-zero rows) included. With sort-based slots the rows
    are the groups present in the row, and the statistics here use only the *used* slots, so they differ from TF's
    (which depend on how many empty categories the dataset has) but are independent of the dataset's category count
    and of padding.

    Shapes: ``x`` (B, S, F), ``mask`` (B, S) -> (B, S, F).
    """

    def __init__(self, num_features: int, eps: float = TF_LN_EPSILON) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(x.dtype)[..., None]  # (B, S, 1)
        count = (m.sum(dim=(1, 2)) * x.shape[-1]).clamp(min=1.0)  # (B,)
        mean = (x * m).sum(dim=(1, 2)) / count  # (B,)
        centered = (x - mean[:, None, None]) * m
        var = centered.square().sum(dim=(1, 2)) / count  # (B,)
        normed = centered * torch.rsqrt(var + self.eps)[:, None, None]
        return normed * self.weight + self.bias


class ActivationUnit(nn.Module):
    """DIN's local activation unit: an MLP on ``[q, k, q - k, q * k]`` giving one score per key.

    The first linear layer ``W = [Wq | Wk | Wd | Wp]`` (stored as one ``nn.Linear(4D, H)``, i.e. the same parameters
    as the concatenated form) is applied algebraically split (design-notes §2)::

        [q, k, q-k, q*k] W^T + b = q (Wq + Wd)^T + b  +  k (Wk - Wd)^T  +  (q*k) Wp^T

    The first term is computed once per row (not T times), the second does not depend on the target, and the
    ``(B, T, 4D)`` concat is never built: about half the FLOPs and memory of the concatenated form.

    With many keys per row (``N > H / 2``) the last two terms are folded into one per-row matrix instead,
    ``k (Wk - Wd)^T + (q*k) Wp^T = k M_b`` with ``M_b = (Wk - Wd)^T + diag(q_b) Wp^T`` (D, H), and one ``baddbmm``:
    the (B, N, D) product ``q*k`` and the two (B, N, H) partial sums (and their gradients) are never built, at the
    cost of the (B, D, H) matrices, so the trade pays once a row's ``N x D`` product is comparable to its
    ``D x H`` matrix. Measured forward + backward on 2 CPU threads at B = 1024, D = 128, H = 80, with the
    allocator setting of :mod:`dhan.allocator` (min ms, split vs fold): N = 20: 70 vs 92; N = 40: 123 vs 116;
    N = 50: 168 vs 148; N = 64: 212 vs 159; N = 80: 248 vs 178. Without that setting the crossover lies near
    N = 70 (N = 100: 381 vs 267; N = 200: 762 vs 429). Both are the same function (tested against the concatenated
    form); docs/benchmarks.md.
    :meth:`forward_concat` is the literal concatenated form (used by tests and when an input LayerNorm is needed).

    ``output_bias=False`` drops the final layer's bias; use it when the scores go through a softmax, where that bias
    cancels out and would be a parameter that never receives a gradient (the reference graphs carry it anyway).

    Shapes: ``query`` (B, D), ``keys`` (B, N, D) -> scores (B, N). ``keys`` may be ``(1, N, D)`` (one user's
    history against B candidates): the key term is then computed once for all candidates.
    """

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] = (80, 40),
        activation: AttentionActivation = "sigmoid",
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the activation unit needs at least one hidden layer; got hidden=()")
        if activation not in ("sigmoid", "relu", "prelu"):
            # Dice would mix statistics across padded keys and break padding invariance.
            raise ValueError(f"attention activation must be sigmoid, relu or prelu; got {activation!r}")
        self.dim = dim
        self.first = nn.Linear(4 * dim, hidden[0])
        self.first_activation = make_activation(activation, hidden[0])
        self.rest = MLP(hidden[0], hidden[1:], activation, out_dim=1)
        if not output_bias:
            # Under a softmax the score's bias cancels (shift invariance): it could never get a gradient.
            last = self.rest.net[-1]
            assert isinstance(last, nn.Linear)
            self.rest.net[-1] = nn.Linear(last.in_features, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        d = self.dim
        w_q, w_k, w_d, w_p = self.first.weight.split(d, dim=1)  # each (H, D)
        query_term = F.linear(query, w_q + w_d, self.first.bias)  # (B, H), once per row
        if keys.shape[0] == query.shape[0] and 2 * keys.shape[1] > w_p.shape[0]:
            # Many keys per row: fold the key and product terms into one (D, H) matrix per row (see the docstring).
            per_row = (w_k - w_d).t() + query[:, :, None] * w_p.t()  # (B, D, H)
            hidden = torch.baddbmm(query_term[:, None, :], keys, per_row)  # (B, N, H)
        else:
            key_term = F.linear(keys, w_k - w_d)  # (B, N, H), independent of the query; once if keys are (1, N, D)
            product_term = F.linear(query[:, None, :] * keys, w_p)  # (B, N, H)
            hidden = query_term[:, None, :] + key_term + product_term  # (B, N, H)
        return self.rest(self.first_activation(hidden)).squeeze(-1)  # (B, N)

    def concat_input(self, query: Tensor, keys: Tensor) -> Tensor:
        q = query[:, None, :].expand_as(keys)  # (B, N, D)
        return torch.cat([q, keys, q - keys, q * keys], dim=-1)  # (B, N, 4D)

    def forward_concat(
        self, query: Tensor, keys: Tensor, input_norm: nn.Module | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """The literal form: ``MLP(norm([q, k, q-k, q*k]))``; ``input_norm`` is called as ``input_norm(x, mask)``."""
        x = self.concat_input(query, keys)  # (B, N, 4D)
        if input_norm is not None:
            x = input_norm(x, mask)
        return self.rest(self.first_activation(self.first(x))).squeeze(-1)  # (B, N)


# --------------------------------------------------------------------------------------------------------------------
# Grouping over the groups present in each row (DHAN Eq. 2)
# --------------------------------------------------------------------------------------------------------------------


def group_slots(group_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Assign each unit of each row to a slot: one slot per distinct group id present among that row's real units.

    Sort each row's ids (padding moved to the end with a sentinel), mark where the sorted id changes, cumulative-sum
    to a slot index and scatter it back (design-notes §3). Slots are ordered by group id; a row has at most ``N``
    slots whatever the number of groups in the dataset. Cost ``O(B N log N)``.

    Shapes: ``group_ids`` (B, N) int64, ``mask`` (B, N) bool ->
    ``slot`` (B, N) int64 slot of each unit (padding units get a slot after the real ones),
    ``slot_mask`` (B, S=N) bool (slot used by a real unit), ``slot_ids`` (B, S) int64 group id of each slot (0 unused).
    """
    sentinel = torch.iinfo(group_ids.dtype).max
    keys = group_ids.masked_fill(~mask, sentinel)
    sorted_keys, order = keys.sort(dim=1, stable=True)  # (B, N)
    new_group = torch.ones_like(mask)
    new_group[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    sorted_slot = new_group.long().cumsum(dim=1) - 1  # (B, N) slot of each sorted unit
    slot = torch.empty_like(sorted_slot).scatter_(1, order, sorted_slot)  # (B, N) back in original positions
    sorted_real = sorted_keys != sentinel
    slot_mask = torch.zeros_like(mask).scatter_(1, sorted_slot, sorted_real)  # (B, S)
    slot_ids = torch.zeros_like(group_ids).scatter_(1, sorted_slot, sorted_keys.masked_fill(~sorted_real, 0))
    return slot, slot_mask, slot_ids


def group_pool(values: Tensor, weights: Tensor, slot: Tensor, num_slots: int, eps: float = 1e-10) -> Tensor:
    """DHAN Eq. 2 for every slot: ``c_g = sum_{u in g} w_u v_u / (sum_{u in g} w_u + eps)``.

    ``weights`` must already be 0 on padding units. An unused slot gets exactly the zero vector. The epsilon keeps
    the sign of the denominator (raw, unnormalised weights can be negative), so the result is finite.

    Shapes: ``values`` (B, N, D), ``weights`` (B, N), ``slot`` (B, N) -> (B, S=num_slots, D); ``values`` and
    ``slot`` may have batch size 1 and are then shared by every row.
    """
    b, n = weights.shape  # values and slot may have batch size 1 (one user's history, many candidates): broadcast
    d = values.shape[-1]
    flat = (slot.expand(b, n) + torch.arange(b, device=slot.device)[:, None] * num_slots).reshape(-1)  # (B*N,)
    weight_sum = weights.new_zeros(b * num_slots).index_add_(0, flat, weights.reshape(-1))  # (B*S,)
    denom = weight_sum + torch.where(weight_sum >= 0, eps, -eps)
    # Divide the (B, N) weights, not the (B, S, D) sums: same result, and the division's backward (which reduces
    # over D for the denominator) runs on B*N scalars instead of B*S*D elements (measured 11% of a DHAN step).
    share = weights / denom[flat].view(b, n)  # (B, N) each unit's share of its group
    pooled = values.new_zeros(b * num_slots, d).index_add_(0, flat, (share[..., None] * values).reshape(-1, d))
    return pooled.view(b, num_slots, d)  # (B, S, D)


def group_parents(parent_ids: Tensor, mask: Tensor, slot: Tensor, num_slots: int) -> Tensor:
    """The parent id of each slot, from the parent ids of its units (the largest if they disagree; 0 if unused).

    Shapes: ``parent_ids`` (B, N), ``mask`` (B, N), ``slot`` (B, N) -> (B, S).
    """
    src = parent_ids.masked_fill(~mask, 0)
    return parent_ids.new_zeros(parent_ids.shape[0], num_slots).scatter_reduce_(1, slot, src, "amax")


def static_shapes_required() -> bool:
    """True while tracing, exporting (TorchScript, ONNX, ``torch.export``) or compiling: no data-dependent shapes."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


# --------------------------------------------------------------------------------------------------------------------
# The reusable hierarchical attention
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionOptions:
    """How each attention level scores and normalises (the faithfulness switches of DHAN's attention).

    Defaults are the paper's reading (see ``docs/models.md``); ``reference_code()`` gives the released
    ``DHAN_DIN/dhan/model.py``.
    """

    hidden: tuple[int, ...] = (80, 40)  # activation-unit MLP widths: 80 -> 40 -> 1 in every reference graph
    activation: AttentionActivation = "sigmoid"  # sigmoid in DHAN_DIN/DHAN_DIEN attention MLPs
    normalization: Literal["softmax", "none"] = "softmax"  # softmax: DHAN/DIN code; none: DIN paper's raw weights
    scaled: bool = False  # divide scores by sqrt(D): DHAN_DIN does (sqrt(128)); DHAN_DIEN and the paper do not
    share_level_mlp: bool = False  # one activation unit for all levels: DHAN_DIN (AUTO_REUSE); paper/DHAN_DIEN: no
    group_layer_norm: bool = False  # LayerNorm on the input of levels >= 2 (DHAN_DIN, contrib LN over (C, 4D))
    eps: float = 1e-10  # Eq. 2 denominator epsilon, as in DHAN_DIN (eps=1e-10)

    @classmethod
    def reference_code(cls) -> AttentionOptions:
        return cls(scaled=True, share_level_mlp=True, group_layer_norm=True)


@dataclass
class HierarchicalAttentionOutput:
    """Pooled vectors and weights of every level (level 1 = items).

    ``pooled[l]`` (B, D) is level ``l+1``'s interest vector (``pooled[0]`` is DIN's ``i_x``, ``pooled[1]`` the
    paper's ``x`` when there are two levels). ``weights[0]`` (B, T) are the item weights; ``weights[l]`` (B, S) the
    group weights of level ``l+1``, over slots whose group ids are ``group_ids[l]`` (B, S) and which are real where
    ``group_mask[l]`` (B, S), and whose Eq. 2 vectors are ``group_vectors[l]`` (B, S, D).
    ``group_ids[0]``, ``group_mask[0]`` and ``group_vectors[0]`` are empty placeholders for the item level.
    """

    pooled: list[Tensor]
    weights: list[Tensor]
    group_ids: list[Tensor]
    group_mask: list[Tensor]
    group_vectors: list[Tensor]


class HierarchicalAttention(nn.Module):
    """DHAN's attention chain for one dimension (paper §2.1-2.2, Eq. 2), on plain tensors.

    Level 1 scores each history item against the query with an activation unit and pools them (DIN). Level
    ``l+1`` groups the level-``l`` units by their level-``l+1`` group id (level 2: each item's category; level 3:
    each category's parent; ...), forms each group's vector as the level-``l``-weight-normalised sum of Eq. 2, and
    attends over the groups present in the row with the same query. Groups are found per row by sorting (no loop
    over groups, rows or users; cost independent of how many groups the dataset has). Empty histories give zero
    vectors and zero weights, never NaN.

    Shapes: ``query`` (B, D), ``keys`` (B, T, D), ``mask`` (B, T) bool (True = real), ``group_ids`` (B, T, L-1)
    int64 (column ``j`` = each item's group id used by level ``j+2``; any ids, e.g. category then parent category).
    ``keys``, ``mask`` and ``group_ids`` may instead have batch size 1: one history scored against B queries
    (candidates). The key terms of the activation units and the grouping are then computed once, not B times;
    ``group_ids`` / ``group_mask`` of the output then have batch size 1 too.

    Example (ten lines; drop into any model)::

        import torch
        from dhan.layers import AttentionOptions, HierarchicalAttention

        B, T, D = 32, 50, 128
        han = HierarchicalAttention(dim=D, num_levels=3, options=AttentionOptions())
        query = torch.randn(B, D)                      # target item embedding
        keys = torch.randn(B, T, D)                    # history item embeddings
        mask = torch.arange(T) < torch.randint(0, T + 1, (B, 1))  # (B, T) True = real behaviour
        groups = torch.stack([torch.randint(2, 40, (B, T)), torch.randint(2, 5, (B, T))], dim=-1)  # category, parent
        out = han(query, keys, mask, groups)
        features = torch.cat(out.pooled, dim=-1)       # (B, 3 * D): item-, category- and parent-level interest
    """

    def __init__(self, dim: int, num_levels: int = 2, options: AttentionOptions | None = None) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1; got {num_levels}")
        self.options = options or AttentionOptions()
        self.dim = dim
        self.num_levels = num_levels
        n_units = 1 if self.options.share_level_mlp else num_levels
        bias = self.options.normalization != "softmax"
        self.units = nn.ModuleList(
            ActivationUnit(dim, self.options.hidden, self.options.activation, bias) for _ in range(n_units)
        )
        self.group_norms = nn.ModuleList(
            MaskedGroupLayerNorm(4 * dim) for _ in range(num_levels - 1 if self.options.group_layer_norm else 0)
        )
        self.scale = 1.0 / math.sqrt(dim) if self.options.scaled else 1.0
        # Trim the group slots of each level to the most any row of the batch uses (one host sync per level).
        # Off under tracing / export / torch.compile, where shapes must not depend on the data (then S = N).
        self.dynamic_slots = True

    def unit(self, level: int) -> ActivationUnit:
        """The activation unit of a level (0-based): all levels share unit 0 when ``share_level_mlp``."""
        return self.units[0 if self.options.share_level_mlp else level]  # type: ignore[return-value]

    def _attend(self, level: int, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        unit = self.unit(level)
        if level > 0 and self.options.group_layer_norm:
            scores = unit.forward_concat(query, keys, self.group_norms[level - 1], mask)  # (B, N)
        else:
            scores = unit(query, keys)  # (B, N)
        weights = normalize_scores(scores * self.scale, mask, self.options.normalization)  # (B, N)
        pooled = torch.matmul(weights[:, None, :], keys).squeeze(1)  # (B, D); keys may be (1, N, D), broadcast
        return pooled, weights

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, group_ids: Tensor | None = None
    ) -> HierarchicalAttentionOutput:
        n_group_cols = 0 if group_ids is None else group_ids.shape[-1]
        if n_group_cols < self.num_levels - 1:
            raise ValueError(
                f"group_ids has {n_group_cols} columns; a {self.num_levels}-level attention needs "
                f"{self.num_levels - 1} (one group id per item for each level above the item level)"
            )
        pooled, weights = self._attend(0, query, keys, mask)
        none = keys.new_zeros(0)
        out = HierarchicalAttentionOutput([pooled], [weights], [none.long()], [none.bool()], [none])
        units, unit_mask = keys, mask  # (B, N, D), (B, N): the current level's units
        item_slot: Tensor | None = None  # (B, T) slot of each item at the current level
        for level in range(1, self.num_levels):
            assert group_ids is not None
            item_ids = group_ids[..., level - 1]  # (B, T) each item's group id at this level
            # (B, N) the next-level group id of each unit: the items' own ids at level 2, the parents above
            unit_ids = item_ids if item_slot is None else group_parents(item_ids, mask, item_slot, units.shape[1])
            slot, slot_mask, slot_ids = group_slots(unit_ids, unit_mask)  # (B, N), (B, S=N), (B, S=N)
            num_slots = units.shape[1]
            if self.dynamic_slots and not static_shapes_required():
                # Keep only as many slots as the row with the most groups uses (S_max <= N, often << N). Padding
                # units (weight 0) then share the last slot, which adds exactly 0 to it.
                num_slots = max(int(slot_mask.sum(dim=1).max()), 1) if slot_mask.numel() else 1
                slot, slot_mask, slot_ids = (
                    slot.clamp(max=num_slots - 1),
                    slot_mask[:, :num_slots],
                    slot_ids[:, :num_slots],
                )
            groups = group_pool(units, weights * unit_mask, slot, num_slots, self.options.eps)  # (B, S, D)
            item_slot = slot if item_slot is None else torch.gather(slot, 1, item_slot)  # (B, T)
            pooled, weights = self._attend(level, query, groups, slot_mask)
            out.pooled.append(pooled)
            out.weights.append(weights)
            out.group_ids.append(slot_ids)
            out.group_mask.append(slot_mask)
            out.group_vectors.append(groups)
            units, unit_mask = groups, slot_mask
        return out
