"""Parts every model shares: the output type, the common config fields, item embeddings and the MLP head.

Shapes: B batch, T history length, A attribute columns, D item representation (item ⊕ attributes), F features.

Conventions (every model):

* ``Model(config, schema)``; ``forward(batch) -> ModelOutput``: logits ``(B,)`` out, the loss outside (sigmoid /
  BCE-with-logits in training code). DIEN-style models put their auxiliary loss, already multiplied by
  ``aux_loss_weight``, in ``ModelOutput.aux_loss``; nothing is stored on ``self``.
* One set of parameters scores every item: there is no second "negative tower" (the authors' DIN-generation
  graphs build one and never train its norm layers, which leaks the test label; reference-code-notes §0).
* ``needs_negatives`` (class attribute) says whether training batches must carry ``neg_hist_items``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from dhan.batch import Batch
from dhan.layers import MLP, Activation, DiceVariant, TFInferenceBatchNorm
from dhan.schema import PAD_ID, Schema

EmbeddingInit = Literal["normal", "glorot_uniform"]
HeadOutput = Literal["logit", "softmax2"]
InputNorm = Literal["none", "tf-affine", "batchnorm"]
InterestBlock = Literal["none", "bn-dense", "ln-bn-dense"]


@dataclass
class ModelOutput:
    logits: Tensor  # (B,) one logit per sample; p = sigmoid(logits)
    aux_loss: Tensor | None = None  # () scalar, already weighted; None for models without one (or no negatives)


MAX_WIDTH = 16384  # largest embedding or layer width a config accepts: a bigger one is a typo, not a model


@dataclass(frozen=True)
class CommonConfig:
    """Fields every model has. Defaults follow the paper reading; ``reference_code()`` presets override them."""

    item_embedding_dim: int = 64  # DHAN_DIN/DIN-gen code: item_emb_w [n_item, 64]
    attribute_embedding_dim: int = 64  # DHAN_DIN/DIN-gen code: cate_emb_w [n_cate, 64]
    # Attributes embedded and joined to the item embedding (item ⊕ attr ⊕ ...); () = the item id alone.
    # None = the model's default: the category for the baselines, as the reference code's item ⊕ cate (§1.1);
    # for DHAN the first-level attribute of each attention dimension.
    embed_attributes: tuple[str, ...] | None = None
    # "normal": N(0, 1/d) per table, scale independent of vocabulary size (our choice); "glorot_uniform": TF1's
    # get_variable default used by every reference graph (U(±sqrt(6/(N+d))), tiny for big vocabularies).
    embedding_init: EmbeddingInit = "normal"
    head_hidden: tuple[int, ...] = (200, 80)  # DHAN paper / DIEN code: 200-80-2; DHAN_DIN/DIN code: 80-40-1
    head_activation: Activation = "dice"  # DIEN code and DHAN paper (after DIN): Dice; DHAN_DIN code: sigmoid
    dice_variant: DiceVariant = "running"  # running-stats Dice (usable at eval); "batch" = DIEN code's Dice
    # "softmax2": 2-unit output + softmax as in the DHAN paper / DIEN code; the logit returned is z1 - z0, the
    # same probability as softmax's p(click). "logit": one output unit (DHAN_DIN/DIN code, sigmoid CE).
    head_output: HeadOutput = "softmax2"
    head_input_norm: InputNorm = "none"  # "tf-affine": every reference graph's BN before the head (affine only)
    item_bias: bool = False  # per-item scalar bias added to the logit (DIN/DHAN_DIN code: item_b, init 0)
    # Block on the joined interest vectors before they meet the target: DIN code BN -> Dense (same width);
    # DHAN_DIN code LN -> BN -> Dense256 (reference-code-notes §1.5, §5a). BN is the TF affine-only one.
    interest_block: InterestBlock = "none"

    def __post_init__(self) -> None:
        for name in ("item_embedding_dim", "attribute_embedding_dim"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_WIDTH:
                raise ValueError(f"{name} must be between 1 and {MAX_WIDTH}; got {value}")
        # every MLP width of every model config (head_hidden, attention_hidden, aux_hidden, ...)
        for f in fields(self):
            if f.name.endswith("_hidden"):
                widths = getattr(self, f.name)
                if any(not 1 <= h <= MAX_WIDTH for h in widths):
                    raise ValueError(f"{f.name} widths must be between 1 and {MAX_WIDTH}; got {widths}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ItemEmbedding(nn.Module):
    """Item representation: item embedding ⊕ embeddings of the chosen attributes (padding id 0 → zero vector).

    Shapes: ``items`` (...,), ``attrs`` (..., A) -> (..., D) with D = item dim + len(attributes) * attribute dim.
    """

    def __init__(self, schema: Schema, config: CommonConfig, attributes: tuple[str, ...]) -> None:
        super().__init__()
        for name in attributes:
            if name not in schema.attribute_names:
                raise ValueError(
                    f"model.embed_attributes names {name!r}, which this dataset does not have; it has "
                    f"{list(schema.attribute_names)}. Set --set model.embed_attributes=... to some of those."
                )
        self.attributes = attributes
        self.register_buffer(
            "attribute_columns", torch.tensor([schema.attribute_index(n) for n in attributes], dtype=torch.long)
        )
        self.attribute_columns: Tensor
        self.item = nn.Embedding(schema.item_vocab_size, config.item_embedding_dim, padding_idx=PAD_ID)
        self.attribute_tables = nn.ModuleList(
            nn.Embedding(schema.attribute(n).vocab_size, config.attribute_embedding_dim, padding_idx=PAD_ID)
            for n in attributes
        )
        self.dim = config.item_embedding_dim + len(attributes) * config.attribute_embedding_dim
        for table in [self.item, *self.attribute_tables]:
            init_embedding(table, config.embedding_init)

    def forward(self, items: Tensor, attrs: Tensor) -> Tensor:
        parts = [self.item(items)]
        for j, table in enumerate(self.attribute_tables):
            parts.append(table(attrs[..., self.attribute_columns[j]]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (..., D)

    def target(self, batch: Batch) -> Tensor:
        return self(batch.target_item, batch.target_attrs)  # (B, D)

    def history(self, batch: Batch) -> Tensor:
        return self(batch.hist_items, batch.hist_attrs)  # (B, T, D)

    def negatives(self, batch: Batch) -> Tensor:
        if batch.neg_hist_items is None or batch.neg_hist_attrs is None:
            raise ValueError(
                "this model's auxiliary loss needs batch.neg_hist_items and neg_hist_attrs; build batches with "
                "with_negatives=True (the loader's default)"
            )
        return self(batch.neg_hist_items, batch.neg_hist_attrs)  # (B, T, D)


def init_embedding(table: nn.Embedding, how: EmbeddingInit) -> None:
    with torch.no_grad():
        if how == "normal":
            nn.init.normal_(table.weight, std=1.0 / math.sqrt(table.embedding_dim))
        elif how == "glorot_uniform":
            nn.init.xavier_uniform_(table.weight)
        else:
            raise ValueError(f"embedding_init must be 'normal' or 'glorot_uniform'; got {how!r}")
        if table.padding_idx is not None:
            table.weight[table.padding_idx].zero_()


def resolve_attributes(config: CommonConfig, schema: Schema, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``config.embed_attributes``, or when it is None ``default``, or the category when the dataset has one."""
    if config.embed_attributes is not None:
        return config.embed_attributes
    if default is not None:
        return default
    return ("category",) if "category" in schema.attribute_names else ()


def make_input_norm(kind: InputNorm, num_features: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "tf-affine":
        return TFInferenceBatchNorm(num_features)
    if kind == "batchnorm":
        return nn.BatchNorm1d(num_features)
    raise ValueError(f"head_input_norm must be none, tf-affine or batchnorm; got {kind!r}")


class InterestProjection(nn.Module):
    """Optional block on the joined interest vectors (``interest_block``): none, BN → Dense, or LN → BN → Dense.

    Shapes: (B, F) -> (B, F).
    """

    def __init__(self, kind: InterestBlock, num_features: int) -> None:
        super().__init__()
        if kind not in ("none", "bn-dense", "ln-bn-dense"):
            raise ValueError(f"interest_block must be none, bn-dense or ln-bn-dense; got {kind!r}")
        self.kind = kind
        if kind != "none":
            # TF contrib layer_norm on a (B, F) tensor: over F, epsilon 1e-12 (reference-code-notes §1.5 step 2)
            self.layer_norm = nn.LayerNorm(num_features, eps=1e-12) if kind == "ln-bn-dense" else nn.Identity()
            self.batch_norm = TFInferenceBatchNorm(num_features)
            self.dense = nn.Linear(num_features, num_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x
        return self.dense(self.batch_norm(self.layer_norm(x)))


class Head(nn.Module):
    """input norm → MLP (``head_hidden``, ``head_activation``) → one logit (or two-unit softmax as ``z1 - z0``).

    Shapes: (B, F) -> (B,).
    """

    def __init__(self, in_dim: int, config: CommonConfig) -> None:
        super().__init__()
        self.input_norm = make_input_norm(config.head_input_norm, in_dim)
        out = 2 if config.head_output == "softmax2" else 1
        activation, variant = config.head_activation, config.dice_variant
        self.mlp = MLP(in_dim, config.head_hidden, activation, out_dim=out, dice_variant=variant)
        self.two_class = config.head_output == "softmax2"

    def forward(self, x: Tensor) -> Tensor:
        z = self.mlp(self.input_norm(x))  # (B, 1) or (B, 2)
        if self.two_class:
            return z[:, 1] - z[:, 0]  # (B,) softmax([z0, z1])[1] == sigmoid(z1 - z0)
        return z.squeeze(-1)  # (B,)


class ItemBias(nn.Module):
    """Per-item scalar logit bias (DIN/DHAN_DIN code ``item_b``, zero-initialised)."""

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.bias = nn.Embedding(schema.item_vocab_size, 1, padding_idx=PAD_ID)
        nn.init.zeros_(self.bias.weight)

    def forward(self, items: Tensor) -> Tensor:
        return self.bias(items).squeeze(-1)  # (B,)


class CTRModel(nn.Module):
    """Base class: holds the config and schema, the item embedding, an optional item bias; subclasses define forward."""

    needs_negatives: ClassVar[bool] = False
    # forward() accepts a history batch of size 1 with B targets (one user against B candidates) and shares the
    # history's work across them; models without it are scored on the history expanded to B rows.
    broadcasts_history: ClassVar[bool] = False

    def __init__(self, config: CommonConfig, schema: Schema, attributes: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.config = config
        self.schema = schema
        attributes = resolve_attributes(config, schema) if attributes is None else attributes
        self.embedding = ItemEmbedding(schema, config, attributes)
        self.item_bias = ItemBias(schema) if config.item_bias else None

    def add_item_bias(self, logits: Tensor, batch: Batch) -> Tensor:
        return logits if self.item_bias is None else logits + self.item_bias(batch.target_item)

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_candidates(self, history: Batch, candidate_items: Tensor, candidate_attrs: Tensor) -> Tensor:
        """Logits (K,) of one user's history against K candidate items: the same numbers as ``forward`` on the
        batch of K rows that repeats the history, but the history's embeddings, the activation units' key terms,
        DHAN's grouping and DIEN's GRU extractor are computed once instead of K times.

        ``history``: a batch of one row (its target is ignored; negatives are not used); ``candidate_items`` (K,)
        int64; ``candidate_attrs`` (K, A) int64. Meant for eval mode (no auxiliary loss is computed): in training
        mode a batch-statistics norm would see the K rows as the batch, as ``forward`` would.
        """
        if history.size != 1:
            raise ValueError(f"score_candidates takes the history of one user (a batch of 1); got {history.size}")
        k = int(candidate_items.shape[0])
        if candidate_attrs.shape[0] != k:
            raise ValueError(f"candidate_attrs has {candidate_attrs.shape[0]} rows; expected {k} (one per candidate)")
        rows = 1 if self.broadcasts_history else k
        batch = Batch(
            target_item=candidate_items,
            target_attrs=candidate_attrs,
            hist_items=history.hist_items.expand(rows, -1),
            hist_attrs=history.hist_attrs.expand(rows, -1, -1),
            hist_mask=history.hist_mask.expand(rows, -1),
        )
        return self.forward(batch).logits


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum over T of the real positions. Shapes: (B, T, D), (B, T) -> (B, D)."""
    return torch.bmm(mask.to(values.dtype)[:, None, :], values).squeeze(1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over T of the real positions; 0 for an empty history. Shapes: (B, T, D), (B, T) -> (B, D)."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(values.dtype)  # (B, 1)
    return masked_sum(values, mask) / count


__all__ = [
    "CTRModel",
    "CommonConfig",
    "Head",
    "ItemBias",
    "ItemEmbedding",
    "ModelOutput",
    "masked_mean",
    "masked_sum",
]
