"""Self-contained scoring artifacts: ``dhan export --run RUN --format torchscript|onnx --out FILE``.

An artifact holds the model *and* everything needed to turn raw ids into model inputs: the item id map (raw id of
every item id), the item attribute table, every attribute vocabulary, the schema and the model's config. It has one
entry point on plain tensors, batch size ``B`` and history length ``T`` both dynamic (``1 <= T <= max_len``)::

    target_item (B,) int64, target_attrs (B, A) int64, hist_items (B, T) int64, hist_attrs (B, T, A) int64,
    hist_mask (B, T) bool  ->  probability (B,) float32

Ids follow :mod:`dhan.schema` (0 padding, 1 unknown); histories are right-padded, oldest first.

Where the metadata lives (one JSON document, :data:`METADATA_KEY`):

* TorchScript (a zip archive): the extra file ``dhan/metadata.json`` (``torch.jit.load(f, _extra_files=...)``).
* ONNX: the model's ``metadata_props`` entry ``dhan`` (``onnx.load(f).metadata_props``, or onnxruntime's
  ``session.get_modelmeta().custom_metadata_map["dhan"]``).

Models whose history encoder is a Python loop over the steps (DIEN's AUGRU in ``dien`` and ``dhan-gru``) cannot be
traced with a dynamic number of steps: their artifact right-pads every history to ``max_len`` first (right padding
never changes a score; see ``Batch.with_padding``), so the loop is unrolled ``max_len`` times and any ``T <=
max_len`` is accepted. The metadata says so (``"pad_to"``).

Parity: before an artifact is kept, it is loaded back from the temporary file and run (TorchScript by
``torch.jit.load``, ONNX by onnxruntime) on sample batches drawn from the run's dataset (several batch sizes and
history lengths, an empty-history row, a full ``max_len`` history); if any probability differs from eager PyTorch by
more than ``atol`` (1e-5) the export fails and no file is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from dhan import __version__
from dhan.batch import Batch
from dhan.data.loader import HistoryTensors
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.schema import Schema

log = logging.getLogger(__name__)

ExportFormat = Literal["torchscript", "onnx"]
FORMATS: tuple[ExportFormat, ...] = ("torchscript", "onnx")
METADATA_KEY = "dhan"
TORCHSCRIPT_METADATA_FILE = "dhan/metadata.json"
ARTIFACT_FORMAT = "dhan-scoring"
ARTIFACT_VERSION = 1
INPUT_NAMES = ("target_item", "target_attrs", "hist_items", "hist_attrs", "hist_mask")
OUTPUT_NAME = "probability"
ONNX_OPSET = 18  # scatter_reduce(amax) in DHAN's grouping needs ScatterElements with reduction="max" (opset 18)
DEFAULT_ATOL = 1e-5


class ExportError(UserError):
    """An export that cannot be made or fails its parity check (nothing is written)."""


# --------------------------------------------------------------------------------------------------------------------
# The scoring module: plain tensors in, probabilities out
# --------------------------------------------------------------------------------------------------------------------


def has_step_loop(model: nn.Module) -> bool:
    """Whether the model runs a Python loop over history steps (DIEN's AUGRU), which tracing unrolls."""
    from dhan.models.dien import AUGRU

    return any(isinstance(m, AUGRU) for m in model.modules())


def is_batch_dependent(model: nn.Module) -> bool:
    """Whether one row's score depends on the other rows of its batch at eval time (the DIEN code's batch Dice)."""
    from dhan.layers import Dice

    return any(isinstance(m, Dice) and m.variant == "batch" for m in model.modules())


class ScoringModule(nn.Module):
    """``forward(target_item, target_attrs, hist_items, hist_attrs, hist_mask) -> probability (B,)``.

    ``pad_to``: right-pad the history to this many steps first (models with a step loop; see the module docstring).
    """

    def __init__(self, model: nn.Module, pad_to: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pad_to = pad_to

    def forward(
        self,
        target_item: Tensor,
        target_attrs: Tensor,
        hist_items: Tensor,
        hist_attrs: Tensor,
        hist_mask: Tensor,
    ) -> Tensor:
        if self.pad_to is not None:
            extra = self.pad_to - hist_items.shape[1]
            hist_items = nn.functional.pad(hist_items, (0, extra))
            hist_attrs = nn.functional.pad(hist_attrs, (0, 0, 0, extra))
            hist_mask = nn.functional.pad(hist_mask.to(torch.uint8), (0, extra)).to(torch.bool)
        batch = Batch(target_item, target_attrs, hist_items, hist_attrs, hist_mask)
        out = self.model(batch)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return torch.sigmoid(logits)


def batch_inputs(batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (batch.target_item, batch.target_attrs, batch.hist_items, batch.hist_attrs, batch.hist_mask)


# --------------------------------------------------------------------------------------------------------------------
# Metadata: id maps, vocabularies, schema, model config
# --------------------------------------------------------------------------------------------------------------------


def serving_max_len(resolved: Mapping[str, Any], schema: Schema) -> int:
    """The longest history the model is scored with: the run's evaluation length, else the dataset's ``max_len``."""
    dcfg = resolved.get("data") or {}
    value = int(dcfg.get("eval_max_len") or dcfg.get("max_len") or 0)
    return min(value, schema.max_len) if value > 0 else schema.max_len


def build_metadata(model: nn.Module, resolved: Mapping[str, Any], schema: Schema, data: PreparedData) -> dict[str, Any]:
    """Everything a scoring service needs besides the weights, as one JSON-ready dict."""
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "dhan_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_name": str(resolved.get("model_name", type(model).__name__)),
        "preset": str(resolved.get("preset", "")),
        "model_config": resolved.get("model") or {},
        "schema": schema.to_dict(),
        "max_len": serving_max_len(resolved, schema),
        "pad_to": None,
        "batch_dependent": is_batch_dependent(model),
        "explainable": callable(getattr(model, "explain", None)),
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "items": {
            "raw_ids": [str(r) for r in data.item_raw_ids],
            "attributes": np.asarray(data.item_attrs, dtype=np.int64).tolist(),
        },
        "attribute_values": {k: [str(v) for v in vs] for k, vs in data.attribute_values.items()},
    }


def check_metadata(meta: Any, source: str) -> dict[str, Any]:
    """Validate a metadata document read from an artifact; raise UserError naming the file if it is not one."""
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{source}: not a dhan scoring artifact (no {ARTIFACT_FORMAT!r} metadata)")
    if meta.get("format_version") != ARTIFACT_VERSION:
        raise UserError(
            f"{source}: artifact format version {meta.get('format_version')!r}; this dhan reads {ARTIFACT_VERSION}. "
            "Re-export it with this version of dhan."
        )
    missing = [k for k in ("model_name", "schema", "max_len", "items", "attribute_values") if k not in meta]
    if missing:
        raise UserError(f"{source}: artifact metadata lacks {missing}; re-export it")
    try:
        Schema.from_dict(meta["schema"])
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return meta


# --------------------------------------------------------------------------------------------------------------------
# Loading a run and drawing sample batches
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    model: nn.Module
    resolved: dict[str, Any]
    schema: Schema
    data: PreparedData
    path: Path


def load_run(run_dir: str | Path, data_dir: str | Path | None = None, which: str = "best") -> LoadedRun:
    """A run's model (``torch.load(weights_only=True)``) and the prepared dataset it was trained on (its id maps)."""
    from dhan.checkpoint import load_run_model

    model, resolved, schema = load_run_model(run_dir, which)
    path = data_dir or (resolved.get("data") or {}).get("path")
    if not path:
        raise UserError(f"{run_dir}: the run does not name its dataset; pass --data DIR (made by `dhan prepare`)")
    data = PreparedData.load(path)
    if data.schema != schema:
        raise UserError(f"{path}: its schema differs from the run's; use the dataset the run was trained on (--data)")
    model.eval()
    return LoadedRun(model, resolved, schema, data, Path(run_dir))


def sample_batches(data: PreparedData, max_len: int, seed: int = 0) -> list[Batch]:
    """Parity batches: sizes 1, 3 and 17, histories cut to 1, 2 and ``max_len`` steps, an empty-history row, and
    one batch right-padded to exactly ``max_len`` steps."""
    hist = HistoryTensors(data)
    for split in ("test", "valid", "train"):
        samples = data.split(split)
        if len(samples):
            break
    else:
        raise ExportError("the run's dataset has no samples to check the export on")
    gen = np.random.default_rng(seed)
    batches = []
    for size, cut in ((1, max_len), (3, 1), (17, max_len), (5, 2), (8, max_len)):
        idx = gen.integers(0, len(samples), size=size)
        position = torch.from_numpy(samples.position[idx].copy())
        if size > 1:
            position[0] = 0  # one row with an empty history
        batch = hist.gather(
            torch.from_numpy(samples.user[idx]),
            position,
            torch.from_numpy(samples.target[idx]),
            max_len=min(cut, max_len),
            with_negatives=False,
        )
        batches.append(batch)
    last = batches[-1]
    batches[-1] = last.with_padding(max_len - last.hist_len)
    return batches


# --------------------------------------------------------------------------------------------------------------------
# Loading artifacts back
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """A loaded scoring artifact: its metadata and a function on numpy inputs returning probabilities (B,)."""

    format: ExportFormat
    metadata: dict[str, Any]
    run: Callable[[Sequence[np.ndarray]], np.ndarray] = field(repr=False)
    path: Path


def detect_format(path: Path) -> ExportFormat:
    """TorchScript archives are zip files; anything else is tried as ONNX."""
    return "torchscript" if zipfile.is_zipfile(path) else "onnx"


def load_artifact(path: str | Path, fmt: ExportFormat | None = None, num_threads: int = 0) -> Artifact:
    """Load an exported artifact; a missing, damaged or foreign file is a UserError naming it.

    TorchScript archives are read by ``torch.jit.load``, which rebuilds TorchScript modules and tensors only (not
    arbitrary pickled Python objects), but the archive's TorchScript code does run when scoring: load only archives
    you made or trust. ONNX files are protobuf data run by onnxruntime's operator set and carry no code.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such model file; make one with `dhan export --run RUN --out {p}`")
    fmt = fmt or detect_format(p)
    if fmt == "torchscript":
        return _load_torchscript(p)
    return _load_onnx(p, num_threads)


def _load_torchscript(p: Path) -> Artifact:
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError, ValueError, ... for a damaged archive
        raise UserError(f"{p}: cannot load the TorchScript archive ({type(exc).__name__}); re-export it") from None
    try:
        meta = json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    meta = check_metadata(meta, str(p))
    module.eval()

    def run(inputs: Sequence[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        return out.numpy()

    return Artifact("torchscript", meta, run, p)


def _load_onnx(p: Path, num_threads: int = 0) -> Artifact:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX models need onnxruntime: pip install 'dhan[export]'") from None
    options = ort.SessionOptions()
    if num_threads > 0:
        options.intra_op_num_threads = num_threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(p), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for an invalid model
        raise UserError(f"{p}: not a readable ONNX model ({type(exc).__name__}); re-export it") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        meta = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        meta = None
    meta = check_metadata(meta, str(p))
    names = [i.name for i in session.get_inputs()]
    if names != list(INPUT_NAMES):
        raise UserError(f"{p}: ONNX inputs are {names}; expected {list(INPUT_NAMES)}")

    def run(inputs: Sequence[np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(x) for name, x in zip(INPUT_NAMES, inputs, strict=True)}
        return np.asarray(session.run([OUTPUT_NAME], feed)[0])

    return Artifact("onnx", meta, run, p)


# --------------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    path: Path
    format: ExportFormat
    model_name: str
    max_abs_diff: float
    batches: list[dict[str, Any]]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "model": self.model_name,
            "max_abs_diff": self.max_abs_diff,
            "batches": self.batches,
            "bytes": self.bytes,
        }


def _tmp_path(out: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def _quiet_tracer() -> Iterator[None]:
    """Silence the tracer's warnings about Python values taken from tensors (shape checks, loop bounds): they are
    expected here, and whether the trace generalises is what the parity check measures."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _write_torchscript(scoring: ScoringModule, example: Batch, meta: dict[str, Any], path: Path) -> None:
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(scoring, batch_inputs(example), check_trace=False, strict=False)
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(meta)})


@contextmanager
def _onnx_symbolics() -> Iterator[None]:
    """Two conversions the TorchScript-based ONNX exporter gets wrong for DHAN's grouping (``dhan.layers``).

    * ``sort(stable=True)``: the built-in symbolic only knows ``aten::sort(self, dim, descending)`` and rejects the
      stable overload. It becomes ``TopK``, which breaks ties by the lower index as a stable sort does (the grouping
      does not depend on the order of equal ids anyway: every unit of a group gets the group's slot).
    * ``index_add`` along dim 0 with repeated indices (several units pooled into one group slot): the built-in
      conversion keeps one of the duplicates instead of summing them. It becomes ``ScatterElements`` with
      ``reduction="add"`` (opset 16+), which sums duplicates as ``index_add`` does.
    """
    from torch.onnx import symbolic_helper

    def sort(g: Any, self: Any, *args: Any) -> Any:
        dim, descending = (args[1], args[2]) if len(args) == 3 else (args[0], args[1])
        dim_i = symbolic_helper._get_const(dim, "i", "dim")
        descending_i = symbolic_helper._get_const(descending, "i", "descending")
        return symbolic_helper._sort_helper(g, self, dim_i, descending=bool(descending_i))

    def index_add(g: Any, self: Any, dim: Any, index: Any, source: Any, alpha: Any = None) -> Any:
        dim_i = symbolic_helper._get_const(dim, "i", "dim")
        rank = symbolic_helper._get_tensor_rank(source)
        if dim_i != 0 or rank is None:
            return symbolic_helper._unimplemented("index_add", "only dim 0 with a known source rank")
        if alpha is not None and not symbolic_helper._is_none(alpha):
            alpha_f = symbolic_helper._get_const(alpha, "f", "alpha")
            if alpha_f != 1:
                source = g.op("Mul", source, g.op("Constant", value_t=torch.tensor(alpha_f)))
        idx = index
        if rank > 1:
            axes = g.op("Constant", value_t=torch.arange(1, rank, dtype=torch.long))
            idx = g.op("Expand", g.op("Unsqueeze", index, axes), g.op("Shape", source))
        return g.op("ScatterElements", self, idx, source, axis_i=0, reduction_s="add")

    torch.onnx.register_custom_op_symbolic("aten::sort", sort, ONNX_OPSET)
    torch.onnx.register_custom_op_symbolic("aten::index_add", index_add, ONNX_OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::sort", ONNX_OPSET)
        torch.onnx.unregister_custom_op_symbolic("aten::index_add", ONNX_OPSET)


def _write_onnx(scoring: ScoringModule, example: Batch, meta: dict[str, Any], path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install 'dhan[export]'") from None
    axes: dict[str, dict[int, str]] = {
        "target_item": {0: "batch"},
        "target_attrs": {0: "batch"},
        "hist_items": {0: "batch", 1: "history"},
        "hist_attrs": {0: "batch", 1: "history"},
        "hist_mask": {0: "batch", 1: "history"},
        OUTPUT_NAME: {0: "batch"},
    }
    with torch.no_grad(), _onnx_symbolics(), _quiet_tracer():
        torch.onnx.export(
            scoring,
            batch_inputs(example),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    proto.producer_name = "dhan"
    proto.producer_version = __version__
    onnx.save(proto, str(path))


def export_model(
    model: nn.Module,
    meta: dict[str, Any],
    batches: Sequence[Batch],
    fmt: ExportFormat,
    out: str | Path,
    atol: float = DEFAULT_ATOL,
) -> ExportReport:
    """Trace ``model`` into ``out`` in format ``fmt``, check parity on ``batches``; on failure leave no file."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out}: is a directory; --out names the artifact file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create its directory ({exc.strerror})") from None
    model.eval()
    max_len = int(meta["max_len"])
    pad_to = max_len if has_step_loop(model) else None
    meta = {**meta, "pad_to": pad_to}
    scoring = ScoringModule(model, pad_to).eval()
    example = max(batches, key=lambda b: (b.hist_len, b.size))
    tmp = _tmp_path(out)
    try:
        (_write_torchscript if fmt == "torchscript" else _write_onnx)(scoring, example, meta, tmp)
        artifact = load_artifact(tmp, fmt)
        worst, rows = parity(scoring, artifact, batches)
        if not worst <= atol:  # also fails on NaN
            raise ExportError(
                f"{fmt} export of {meta['model_name']} fails the parity check: max |p_export - p_eager| = "
                f"{worst:.3g} > {atol:g} on the sample batches ({rows}); nothing was written"
            )
        os.replace(tmp, out)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        log.debug("export failed", exc_info=True)
        raise ExportError(
            f"{fmt} export of {meta['model_name']} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
            "nothing was written"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, fmt, str(meta["model_name"]), worst, rows, out.stat().st_size)


def parity(scoring: ScoringModule, artifact: Artifact, batches: Sequence[Batch]) -> tuple[float, list[dict[str, Any]]]:
    """Max abs difference of the artifact's probabilities against eager PyTorch, overall and per batch."""
    worst = 0.0
    rows = []
    for batch in batches:
        with torch.no_grad():
            eager = scoring(*batch_inputs(batch)).double().numpy()
        got = artifact.run([t.numpy() for t in batch_inputs(batch)]).astype(np.float64)
        if got.shape != eager.shape:
            raise ExportError(f"the exported model returned shape {got.shape} for a batch of {eager.shape}")
        diff = float(np.max(np.abs(got - eager))) if eager.size else 0.0
        if np.isnan(diff):
            diff = float("inf")
        worst = max(worst, diff)
        rows.append({"batch": batch.size, "history": batch.hist_len, "max_abs_diff": diff})
    return worst, rows


def export_run(
    run_dir: str | Path,
    fmt: ExportFormat,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    which: str = "best",
    atol: float = DEFAULT_ATOL,
) -> ExportReport:
    """``dhan export``: load the run (and its dataset's id maps), export, check parity, write ``out`` atomically."""
    loaded = load_run(run_dir, data_dir, which)
    meta = build_metadata(loaded.model, loaded.resolved, loaded.schema, loaded.data)
    batches = sample_batches(loaded.data, int(meta["max_len"]))
    return export_model(loaded.model, meta, batches, fmt, out, atol)


__all__ = [
    "FORMATS",
    "Artifact",
    "ExportError",
    "ExportReport",
    "LoadedRun",
    "ScoringModule",
    "build_metadata",
    "export_model",
    "export_run",
    "load_artifact",
    "load_run",
    "sample_batches",
]
