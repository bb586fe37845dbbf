"""``dhan serve``: an HTTP JSON scoring service (FastAPI + uvicorn, the optional extra ``dhan[serve]``).

Endpoints (see ``docs/serving.md``):

* ``POST /v1/score`` ``{"history": [raw item ids, oldest first], "candidates": [raw item ids],
  "item_attributes": {raw_id: {attribute: value name}}, "explain": false, "top": 5}`` →
  ``{"scores": [p(click) per candidate, in order], "unknown_items": [raw ids the model has never seen]}``
  (plus ``"explanations"`` when ``explain`` is true).
* ``GET /healthz``, ``GET /v1/metadata`` (model name, schema, version, limits).

One request is scored as one batch: every candidate is a row, all rows share the (expanded) history. Histories
longer than the model's maximum keep the most recent items. Items the model has never seen get the unknown id (1)
and, when the request gives them, their attributes (``item_attributes``); known items always use the attributes
stored with the model. Requests are scored one at a time on one worker thread (torch parallelises inside the call).
An optional micro-batcher (``batching=True``, ``dhan serve --batching``) merges concurrent requests into one model
call (rows concatenated, histories right-padded to the longest), which never changes a score because right padding
and other rows do not affect a row's score; it is off by default because it did not raise throughput for
100-candidate requests (``docs/benchmarks.md``, serving), and always off for models whose scores depend on the batch
(the DIEN code's batch Dice).

Safety: models come only from the command line (``--run``: ``torch.load(weights_only=True)``; ``--model``: an
exported artifact, see :func:`dhan.export.load_artifact`); nothing in a request names a file. Bodies are limited
to ``max_body_bytes`` before parsing and must arrive within ``body_timeout_s`` (408 otherwise), candidates are
limited to ``max_candidates``. The default bind address is 127.0.0.1;
there is no authentication, so put a gateway in front before exposing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from dhan import __version__
from dhan.batch import Batch
from dhan.errors import UserError
from dhan.export import Artifact, LoadedRun, build_metadata, load_artifact, load_run
from dhan.models.common import CTRModel
from dhan.schema import FIRST_ID, UNKNOWN_ID, Schema

log = logging.getLogger(__name__)

MAX_CANDIDATES = 1000
MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_TOP = 50
KEEP_ALIVE_S = 75
BODY_TIMEOUT_S = 10.0  # a client that has not sent its whole body by then gets 408 (slow clients hold no slot)
DEFAULT_BATCH_WINDOW_MS = 1.0
DEFAULT_MAX_BATCH_ROWS = 4096

Inputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True):
    candidates: list[str | int]
    history: list[str | int] = msgspec.field(default_factory=list)
    item_attributes: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    explain: bool = False
    top: int = 5


# --------------------------------------------------------------------------------------------------------------------
# Raw ids -> model ids
# --------------------------------------------------------------------------------------------------------------------


class Vocabulary:
    """The id maps of a model: raw item ids, the item attribute table, attribute value names."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.schema = Schema.from_dict(meta["schema"])
        self.attribute_names = self.schema.attribute_names
        raw_ids = meta["items"]["raw_ids"]
        self.item_raw_ids: list[str] = [str(r) for r in raw_ids]
        self.item_index = {r: i for i, r in enumerate(self.item_raw_ids) if i >= FIRST_ID}
        width = len(self.attribute_names)
        self.item_attrs = np.asarray(meta["items"]["attributes"], dtype=np.int64).reshape(-1, width)
        self.values: dict[str, list[str]] = {k: [str(v) for v in vs] for k, vs in meta["attribute_values"].items()}
        self.value_index = {
            name: {v: i for i, v in enumerate(self.values.get(name, [])) if i >= FIRST_ID}
            for name in self.attribute_names
        }
        self.parents = self._parent_maps()

    def _parent_maps(self) -> dict[str, tuple[int, np.ndarray]]:
        """For every coarser level: (column of its level-1 attribute, map level-1 id -> this level's id)."""
        out: dict[str, tuple[int, np.ndarray]] = {}
        for dim in self.schema.dimensions:
            levels = self.schema.dimension_levels(dim)
            first = self.schema.attribute_index(levels[0].name)
            for spec in levels[1:]:
                col = self.schema.attribute_index(spec.name)
                table = np.full(levels[0].vocab_size, UNKNOWN_ID, dtype=np.int64)
                rows = self.item_attrs[:, first] >= FIRST_ID
                table[self.item_attrs[rows, first]] = self.item_attrs[rows, col]
                out[spec.name] = (first, table)
        return out

    def encode(
        self, raw: Sequence[str], extra: dict[str, dict[str, str]], unknown: dict[str, None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item ids (N,) and attribute ids (N, A) of raw ids; unseen items are added to ``unknown`` (ordered set)."""
        ids = np.fromiter((self.item_index.get(r, UNKNOWN_ID) for r in raw), dtype=np.int64, count=len(raw))
        attrs = self.item_attrs[ids]  # (N, A); unknown rows are all UNKNOWN_ID
        for j in np.flatnonzero(ids == UNKNOWN_ID).tolist():
            unknown.setdefault(raw[j], None)
            given = extra.get(raw[j])
            if given:
                attrs[j] = self.encode_attributes(raw[j], given)
        return ids, attrs

    def encode_attributes(self, raw_id: str, given: dict[str, str]) -> np.ndarray:
        """Attribute ids of an unseen item from value names; missing coarser levels follow from a finer one."""
        row = np.full(len(self.attribute_names), UNKNOWN_ID, dtype=np.int64)
        for name, value in given.items():
            if name not in self.value_index:
                raise RequestError(
                    422, f"item_attributes[{raw_id!r}]: unknown attribute {name!r}; use {list(self.attribute_names)}"
                )
            row[self.schema.attribute_index(name)] = self.value_index[name].get(value, UNKNOWN_ID)
        for name, (first, table) in self.parents.items():
            col = self.schema.attribute_index(name)
            if name not in given and row[first] >= FIRST_ID:
                row[col] = table[row[first]]
        return row


# --------------------------------------------------------------------------------------------------------------------
# Backends: the eager model of a run, or an exported artifact
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """What the service needs from a model: its metadata, a scoring function and, for eager models, explain."""

    backend: str  # "eager", "torchscript" or "onnx"
    metadata: dict[str, Any]
    source: str
    loaded: LoadedRun | None = None
    artifact: Artifact | None = None

    @property
    def max_len(self) -> int:
        return int(self.metadata["max_len"])

    @property
    def batch_dependent(self) -> bool:
        return bool(self.metadata.get("batch_dependent", False))

    @property
    def explainable(self) -> bool:
        return self.loaded is not None and bool(self.metadata.get("explainable"))

    def score(self, inputs: Inputs) -> np.ndarray:
        """Probabilities of every row. One request's rows share one history (a broadcast view, stride 0): the
        eager model then scores them with ``score_candidates``, which embeds and groups that history once."""
        if self.artifact is not None:
            return self.artifact.run(contiguous(inputs)).astype(np.float64)
        assert self.loaded is not None
        items, attrs, hist_items, hist_attrs, hist_mask = inputs
        model = self.loaded.model
        with torch.inference_mode():
            if hist_items.strides[0] == 0 and isinstance(model, CTRModel):
                history = Batch(
                    target_item=torch.from_numpy(items[:1].copy()),
                    target_attrs=torch.from_numpy(attrs[:1].copy()),
                    hist_items=torch.from_numpy(hist_items[:1].copy()),
                    hist_attrs=torch.from_numpy(hist_attrs[:1].copy()),
                    hist_mask=torch.from_numpy(hist_mask[:1].copy()),
                )
                candidates = torch.from_numpy(np.ascontiguousarray(items))
                candidate_attrs = torch.from_numpy(np.ascontiguousarray(attrs))
                logits = model.score_candidates(history, candidates, candidate_attrs)
            else:
                logits = model(to_batch(contiguous(inputs))).logits
        return torch.sigmoid(logits).double().numpy()

    def explain(self, inputs: Inputs) -> dict[str, Any]:
        assert self.loaded is not None
        with torch.inference_mode():
            return self.loaded.model.explain(to_batch(inputs))  # type: ignore[operator]


def to_batch(inputs: Inputs) -> Batch:
    return Batch(*(torch.from_numpy(x) for x in inputs))


def load_scorer(
    run: str | Path | None = None, model: str | Path | None = None, data: str | Path | None = None
) -> Scorer:
    """The scorer of ``--run RUN`` (eager, weights_only checkpoint) or ``--model FILE`` (exported artifact)."""
    if (run is None) == (model is None):
        raise UserError("give exactly one of --run RUN and --model FILE")
    if run is not None:
        loaded = load_run(run, data)
        meta = build_metadata(loaded.model, loaded.resolved, loaded.schema, loaded.data)
        return Scorer("eager", meta, str(run), loaded=loaded)
    artifact = load_artifact(str(model))
    return Scorer(artifact.format, artifact.metadata, str(model), artifact=artifact)


# --------------------------------------------------------------------------------------------------------------------
# Requests -> model inputs, and the micro-batcher
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    inputs: Inputs
    unknown: list[str]
    history: list[str] = field(default_factory=list)  # raw ids of the history kept (most recent max_len)


def _as_raw(values: Sequence[str | int]) -> list[str]:
    return [v if isinstance(v, str) else str(v) for v in values]


def prepare(vocab: Vocabulary, request: ScoreRequest, max_len: int, max_candidates: int) -> Prepared:
    """Validate a decoded request and build its batch: one row per candidate, the history shared."""
    if not request.candidates:
        raise RequestError(422, "candidates is empty; send at least one raw item id to score")
    if len(request.candidates) > max_candidates:
        raise RequestError(
            422, f"{len(request.candidates)} candidates; at most {max_candidates} per request (split the request)"
        )
    if not 1 <= request.top <= MAX_TOP:
        raise RequestError(422, f"top must be between 1 and {MAX_TOP}; got {request.top}")
    unknown: dict[str, None] = {}
    history = _as_raw(request.history[-max_len:])
    candidates = _as_raw(request.candidates)
    h_ids, h_attrs = vocab.encode(history, request.item_attributes, unknown)
    c_ids, c_attrs = vocab.encode(candidates, request.item_attributes, unknown)
    b, t, a = len(candidates), max(len(history), 1), len(vocab.attribute_names)
    hist_items = np.zeros((1, t), dtype=np.int64)
    hist_attrs = np.zeros((1, t, a), dtype=np.int64)
    hist_mask = np.zeros((1, t), dtype=bool)
    n = len(history)
    hist_items[0, :n] = h_ids
    hist_attrs[0, :n] = h_attrs
    hist_mask[0, :n] = True
    inputs: Inputs = (
        c_ids,
        c_attrs,
        np.broadcast_to(hist_items, (b, t)),
        np.broadcast_to(hist_attrs, (b, t, a)),
        np.broadcast_to(hist_mask, (b, t)),
    )
    return Prepared(inputs, list(unknown), history)


def merge(parts: Sequence[Inputs]) -> Inputs:
    """Concatenate several requests' batches, right-padding histories to the longest (padding id 0)."""
    t = max(p[2].shape[1] for p in parts)

    def pad(x: np.ndarray) -> np.ndarray:
        if x.shape[1] == t:
            return x
        widths = [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, widths)

    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([pad(p[2]) for p in parts]),
        np.concatenate([pad(p[3]) for p in parts]),
        np.concatenate([pad(p[4]) for p in parts]),
    )


def contiguous(inputs: Inputs) -> Inputs:
    a, b, c, d, e = (np.ascontiguousarray(x) if x.flags.writeable else np.array(x) for x in inputs)
    return a, b, c, d, e


class MicroBatcher:
    """Merge requests that arrive while the model is busy (or within ``window_s``) into one model call."""

    def __init__(
        self,
        scorer: Scorer,
        executor: concurrent.futures.Executor,
        window_s: float = DEFAULT_BATCH_WINDOW_MS / 1000,
        max_rows: int = DEFAULT_MAX_BATCH_ROWS,
    ) -> None:
        self.scorer = scorer
        self.executor = executor
        self.window_s = window_s
        self.max_rows = max_rows
        self.queue: asyncio.Queue[tuple[Inputs, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.calls = 0
        self.requests = 0

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def submit(self, inputs: Inputs) -> np.ndarray:
        self.start()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            items = [first]
            rows = first[0][0].shape[0]
            deadline = loop.time() + self.window_s
            while rows < self.max_rows:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), remaining)
                    except TimeoutError:
                        break
                items.append(item)
                rows += item[0][0].shape[0]
            self.calls += 1
            self.requests += len(items)
            try:
                merged = contiguous(merge([i[0] for i in items]))
                scores = await loop.run_in_executor(self.executor, self.scorer.score, merged)
            except Exception as exc:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            start = 0
            for inputs, fut in items:
                n = inputs[0].shape[0]
                if not fut.done():
                    fut.set_result(scores[start : start + n])
                start += n


# --------------------------------------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------------------------------------


def explanations(vocab: Vocabulary, prepared: Prepared, expl: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """Per candidate: the top history items by item-level attention and the top categories.

    Categories are DHAN's group-level attention of its first dimension where the model has one; for DIN and DIEN
    they are the item weights summed per category (``"source": "item-weights"``).
    """
    n = len(prepared.history)
    candidates = prepared.inputs[0]
    item_w = expl["item_weights"].double().numpy()[:, :n] if n else np.zeros((len(candidates), 0))
    dims = expl.get("dimensions") or {}
    level = None
    for dim_out in dims.values():
        if dim_out.get("levels"):
            level = dim_out["levels"][0]
            break
    cat_name = "category" if "category" in vocab.attribute_names else (vocab.attribute_names or ("",))[0]
    out = []
    for row in range(len(candidates)):
        order: list[int] = np.argsort(-item_w[row], kind="stable")[:top].tolist() if n else []
        items = [{"item": prepared.history[j], "position": int(j), "weight": float(item_w[row, j])} for j in order]
        groups: list[dict[str, Any]]
        if level is not None:
            attribute = str(level["attribute"])
            ids = level["group_ids"][row].numpy()
            weights = level["weights"][row].double().numpy()
            mask = level["group_mask"][row].numpy().astype(bool)
            names = vocab.values.get(attribute, [])
            pairs = [
                (names[g] if 0 <= g < len(names) else str(g), float(w))
                for g, w in zip(ids[mask].tolist(), weights[mask].tolist(), strict=True)
            ]
            source = "group-attention"
        else:
            attribute = cat_name
            sums: dict[str, float] = {}
            if attribute in vocab.value_index and n:
                col = vocab.schema.attribute_index(attribute)
                names = vocab.values[attribute]
                for j in range(n):
                    g = int(prepared.inputs[3][row, j, col])
                    key = names[g] if 0 <= g < len(names) else str(g)
                    sums[key] = sums.get(key, 0.0) + float(item_w[row, j])
            pairs = list(sums.items())
            source = "item-weights"
        pairs.sort(key=lambda p: -p[1])
        groups = [{"name": name, "weight": w} for name, w in pairs[:top]]
        out.append({"items": items, "groups": {"attribute": attribute, "source": source, "top": groups}})
    return out


# --------------------------------------------------------------------------------------------------------------------
# The service and its FastAPI app
# --------------------------------------------------------------------------------------------------------------------


class ScoringService:
    """Validation, encoding, batching and scoring, independent of the HTTP framework."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        max_candidates: int = MAX_CANDIDATES,
        max_body_bytes: int = MAX_BODY_BYTES,
        batching: bool = False,
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.scorer = scorer
        self.vocab = Vocabulary(scorer.metadata)
        self.max_candidates = max_candidates
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dhan-score")
        self.batching = batching and not scorer.batch_dependent
        if batching and scorer.batch_dependent:
            log.warning("request batching is off: this model's scores depend on the other rows of a batch")
        self.batcher = MicroBatcher(scorer, self.executor, batch_window_ms / 1000) if self.batching else None
        self.decoder = msgspec.json.Decoder(ScoreRequest)
        self.started = time.time()

    def metadata(self) -> dict[str, Any]:
        meta = self.scorer.metadata
        return {
            "model": meta["model_name"],
            "preset": meta.get("preset"),
            "backend": self.scorer.backend,
            "dhan_version": __version__,
            "artifact_dhan_version": meta.get("dhan_version"),
            "created": meta.get("created"),
            "schema": meta["schema"],
            "model_config": meta.get("model_config"),
            "max_len": self.scorer.max_len,
            "num_items": len(self.vocab.item_index),
            "explainable": self.scorer.explainable,
            "batching": self.batching,
            "limits": {
                "max_candidates": self.max_candidates,
                "max_body_bytes": self.max_body_bytes,
                "body_timeout_s": self.body_timeout_s,
            },
        }

    def decode(self, body: bytes) -> ScoreRequest:
        try:
            return self.decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise RequestError(422, f"invalid request: {exc}") from None
        except msgspec.DecodeError as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None

    async def score(self, body: bytes) -> dict[str, Any]:
        request = self.decode(body)
        prepared = prepare(self.vocab, request, self.scorer.max_len, self.max_candidates)
        loop = asyncio.get_running_loop()
        expl = None
        if request.explain:
            if not self.scorer.explainable:
                why = (
                    "this model has no attention"
                    if self.scorer.backend == "eager"
                    else f"a {self.scorer.backend} artifact returns probabilities only; serve the run (--run RUN)"
                )
                raise RequestError(422, f"explain is not available: {why}")
            inputs = contiguous(prepared.inputs)
            scores = await loop.run_in_executor(self.executor, self.scorer.score, inputs)
            expl = await loop.run_in_executor(self.executor, self.scorer.explain, inputs)
        elif self.batcher is not None:
            scores = await self.batcher.submit(prepared.inputs)
        else:
            scores = await loop.run_in_executor(self.executor, self.scorer.score, prepared.inputs)
        out: dict[str, Any] = {"scores": [float(s) for s in scores], "unknown_items": prepared.unknown}
        if expl is not None:
            out["explanations"] = explanations(self.vocab, prepared, expl, request.top)
        return out

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False)


def _require_fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise UserError("dhan serve needs FastAPI and uvicorn: pip install 'dhan[serve]'") from None
    return fastapi


def create_app(service: ScoringService) -> Any:
    """The FastAPI application of ``service``."""
    fastapi = _require_fastapi()
    from contextlib import asynccontextmanager

    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        await service.close()

    app = fastapi.FastAPI(title="dhan scoring", version=__version__, lifespan=lifespan)

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": service.scorer.metadata["model_name"]}

    @app.get("/v1/metadata")
    async def metadata() -> dict[str, Any]:
        return service.metadata()

    async def score(request: Any) -> Any:
        # a plain Starlette route: the body is read here, with its size limit, before anything parses it
        limit = service.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                return error(400, "invalid Content-Length header")
            if too_big:
                return error(413, f"the body has {declared} bytes; at most {limit} are accepted")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(service.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return error(413, f"the body exceeds {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            return error(408, f"the body did not arrive within {service.body_timeout_s:g} s")
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return error(400, "the client closed the connection before sending the whole body")
        try:
            result = await service.score(b"".join(chunks))
        except RequestError as exc:
            return error(exc.status, exc.message)
        return Response(msgspec.json.encode(result), media_type="application/json")

    app.add_route("/v1/score", score, methods=["POST"])
    return app


def run_server(
    scorer: Scorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    batching: bool = False,
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    max_candidates: int = MAX_CANDIDATES,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> None:
    """Serve ``scorer`` with uvicorn until interrupted."""
    _require_fastapi()
    try:
        import uvicorn
    except ImportError:
        raise UserError("dhan serve needs FastAPI and uvicorn: pip install 'dhan[serve]'") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the service has no authentication; expose it only behind a gateway", host)
    service = ScoringService(
        scorer,
        max_candidates=max_candidates,
        max_body_bytes=max_body_bytes,
        batching=batching,
        batch_window_ms=batch_window_ms,
        body_timeout_s=body_timeout_s,
    )
    app = create_app(service)
    log.info(
        "serving %s (%s, %s) on http://%s:%d",
        scorer.metadata["model_name"],
        scorer.backend,
        scorer.source,
        host,
        port,
    )
    # keep-alive 75 s (nginx's default) rather than uvicorn's 5 s: a client that reuses a pooled connection just as
    # the server times it out sees a dropped request (seen once in 3,166 requests of the 64-client soak)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=KEEP_ALIVE_S)


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CANDIDATES",
    "MicroBatcher",
    "RequestError",
    "ScoreRequest",
    "Scorer",
    "ScoringService",
    "Vocabulary",
    "create_app",
    "load_scorer",
    "merge",
    "prepare",
    "run_server",
]
