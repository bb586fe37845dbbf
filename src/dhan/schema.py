"""The contract between a prepared dataset and a model: vocabulary sizes and the item hierarchy.

Id conventions, the same in every vocabulary (items and every attribute):

* ``0`` is padding (``PAD_ID``): never a real value; embeddings use ``padding_idx=0``.
* ``1`` is unknown (``UNKNOWN_ID``): a missing attribute value, or an item the model has never seen (serving).
* real values are ``2 .. num_values + 1``; the vocabulary size is ``num_values + 2``.

Users are not embedded by any model here (the DIN-generation models of the paper use no user id); they are
indexed ``0 .. num_users - 1`` in the stored histories.

Item attributes are grouped into *dimensions* (the paper's "category, price or brand"). Each dimension has one or
more *levels*, ordered from fine to coarse: the ``category`` dimension has ``category`` (the chosen level of the
category path, the leaf by default), ``category_parent`` and ``category_grandparent``; ``brand`` and ``price`` have
one level each (``brand``, ``price_band``). DHAN's attention level 1 attends over items, level 2 over the groups
of the dimension's level-1 attribute, level 3 over the groups of its level-2 attribute, and so on.

``schema.json`` is written by ``dhan prepare`` and read by everything after it. Its keys besides the ones modelled
here (splits, seed, sources, filters, ...) are kept in :attr:`Schema.info` unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhan.errors import DataFormatError

PAD_ID = 0
UNKNOWN_ID = 1
FIRST_ID = 2
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AttributeSpec:
    """One item attribute column: a level of one dimension of the item hierarchy."""

    name: str  # column name, e.g. "category", "category_parent", "brand", "price_band"
    dimension: str  # "category", "brand", "price", or a user-defined name
    level: int  # 1 = the finest attribute of its dimension, 2 = its parent, ...
    num_values: int  # real values, without padding and unknown

    @property
    def vocab_size(self) -> int:
        return self.num_values + FIRST_ID

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dimension": self.dimension,
            "level": self.level,
            "num_values": self.num_values,
            "vocab_size": self.vocab_size,
        }


@dataclass(frozen=True)
class Schema:
    """Vocabulary sizes, history length and item hierarchy of one prepared dataset."""

    num_users: int
    num_items: int  # real items, without padding and unknown
    max_len: int  # longest history a sample carries (most recent items kept)
    attributes: tuple[AttributeSpec, ...] = ()
    recipe: str = "din"
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"attribute names must be unique; got {names}")
        for dim in self.dimensions:
            levels = [a.level for a in self.attributes if a.dimension == dim]
            if sorted(levels) != list(range(1, len(levels) + 1)):
                raise ValueError(f"dimension {dim!r} has levels {levels}; expected 1..{len(levels)} without gaps")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1; got {self.max_len}")

    @property
    def item_vocab_size(self) -> int:
        return self.num_items + FIRST_ID

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """Attribute columns in the order of ``Batch.target_attrs[..., a]`` and ``Batch.hist_attrs[..., a]``."""
        return tuple(a.name for a in self.attributes)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Dimension names in order of first appearance."""
        seen: dict[str, None] = {}
        for a in self.attributes:
            seen.setdefault(a.dimension, None)
        return tuple(seen)

    @property
    def num_categories(self) -> int:
        """Real values of the ``category`` attribute (0 when the dataset has none)."""
        return self.attribute("category").num_values if "category" in self.attribute_names else 0

    def attribute(self, name: str) -> AttributeSpec:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"no attribute {name!r}; this dataset has {list(self.attribute_names)}")

    def attribute_index(self, name: str) -> int:
        """Column of ``name`` in the batch's attribute tensors."""
        try:
            return self.attribute_names.index(name)
        except ValueError:
            raise KeyError(f"no attribute {name!r}; this dataset has {list(self.attribute_names)}") from None

    def dimension_levels(self, dimension: str) -> tuple[AttributeSpec, ...]:
        """The attributes of one dimension, fine to coarse (level 1 first)."""
        levels = tuple(sorted((a for a in self.attributes if a.dimension == dimension), key=lambda a: a.level))
        if not levels:
            raise KeyError(f"no dimension {dimension!r}; this dataset has {list(self.dimensions)}")
        return levels

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": SCHEMA_VERSION,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "item_vocab_size": self.item_vocab_size,
            "num_categories": self.num_categories,
            "max_len": self.max_len,
            "recipe": self.recipe,
            "attributes": [a.to_dict() for a in self.attributes],
        }
        for key, value in self.info.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise DataFormatError(
                f"schema.json has format version {version!r}; this dhan reads version {SCHEMA_VERSION}. "
                "Re-run `dhan prepare` with this version of dhan."
            )
        try:
            attributes = tuple(
                AttributeSpec(
                    name=str(a["name"]),
                    dimension=str(a["dimension"]),
                    level=int(a["level"]),
                    num_values=int(a["num_values"]),
                )
                for a in data["attributes"]
            )
            modelled = {"version", "num_users", "num_items", "item_vocab_size", "num_categories", "max_len"}
            modelled |= {"recipe", "attributes"}
            return cls(
                num_users=int(data["num_users"]),
                num_items=int(data["num_items"]),
                max_len=int(data["max_len"]),
                attributes=attributes,
                recipe=str(data.get("recipe", "din")),
                info={k: v for k, v in data.items() if k not in modelled},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"schema.json is malformed ({exc}); re-run `dhan prepare`.") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if path.is_dir():
            path = path / "schema.json"
        if not path.is_file():
            raise DataFormatError(f"{path}: no such file; point --data at a directory made by `dhan prepare`.")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{path}: cannot read schema ({exc}); re-run `dhan prepare`.") from None
        if not isinstance(data, dict):
            raise DataFormatError(f"{path}: expected a JSON object; re-run `dhan prepare`.")
        return cls.from_dict(data)
