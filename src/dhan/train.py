"""Training and evaluation as plain functions: build the optimiser, run the loop, score a split.

What a run does (:func:`fit`):

* trains with ``BCEWithLogitsLoss`` on the model's logits, plus the model's ``aux_loss`` when it returns one
  (DIEN's auxiliary loss);
* evaluates every ``train.eval_every`` steps (or once per epoch) on the **validation** split, keeps ``best.pt``
  at the best validation AUC and stops after ``train.patience`` evaluations without improvement;
* scores the test split **once**, at the end, with the best checkpoint. ``train.protocol=paper`` selects on the
  test split instead, as the authors' code did (reference notes §1.7, §4.4 item 7); its numbers are optimistically
  biased and every output says so.

Everything needed to continue an interrupted run bitwise is in ``last.pt`` (see :mod:`dhan.checkpoint`): on the
CPU, a run stopped at step k and resumed ends with exactly the weights of an uninterrupted run, because the data
order depends only on ``(seed, epoch)`` and every RNG state is restored. ``last.pt`` is written at every
evaluation, every ``train.checkpoint_every`` steps, on Ctrl-C or SIGTERM and at the end; the one it replaces is
kept as ``last.prev.pt``, the fallback when ``last.pt`` is damaged. A run killed at any point (even with SIGKILL,
even while writing a checkpoint) resumes from the newer of the two good files and still ends bitwise identical
(``tests/test_crash.py``).

Multi-process training (``torchrun --nproc-per-node N -m dhan train ...``, see :mod:`dhan.distributed` and
``docs/scaling.md``): ``train.batch_size`` is the **global** batch; each of the N ranks takes ``batch_size / N``
samples of it (the union over the ranks of step k is exactly the single-process batch k), the per-rank losses are
weighted by their share of the global batch so that DistributedDataParallel's gradient average equals the
single-process gradient, and the last global batch of an epoch is dropped when it has fewer per-rank batches than
ranks. Each rank scores a contiguous shard of the evaluation split; rank 0 gathers the scores, computes the metrics
and broadcasts them, so early-stopping decisions are the same everywhere. Rank 0 alone writes the run directory.

The run directory::

    config.json     resolved run config (model, train, data)
    schema.json     the dataset's schema, to rebuild the model without the dataset
    versions.json   package versions and the git revision
    metrics.jsonl   one line per evaluation
    metrics.json    final summary: best step, valid and test metrics, throughput
    best.pt         weights at the selected evaluation
    last.pt         full training state at the last checkpoint (for --resume); last.prev.pt: the one before
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dhan import __version__
from dhan.batch import Batch
from dhan.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    atomic_write_text,
    build_model,
    load_checkpoint,
    load_last_checkpoint,
    model_config_dict,
    previous_path,
    read_json,
    remove_stale_temp_files,
    rng_state,
    set_rng_state,
)
from dhan.config import RunConfig, TrainConfig, run_config_from_resolved
from dhan.data.loader import BatchLoader, HistoryTensors
from dhan.data.store import PreparedData, SampleTable
from dhan.distributed import DistContext, distributed
from dhan.errors import UserError
from dhan.faults import fault_point
from dhan.metrics import classification_metrics

log = logging.getLogger(__name__)

BIASED_LABEL = "paper (BIASED: checkpoint selected on the test set, as the authors' code did)"
REPORTED = ("auc", "gauc", "logloss", "din_pairwise_accuracy")


class NonFiniteLossError(UserError):
    """The loss or the gradient became NaN or infinite; the step was not applied."""


# --------------------------------------------------------------------------- building blocks


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """``train.device`` as a torch device; under torchrun a CUDA run uses the GPU of the local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if ctx is not None and ctx.enabled and name.startswith("cuda"):
        return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """``train.precision`` resolved for a device: bf16 autocast when asked, or by default (``auto``) on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def forward_autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """The context of a forward pass: bf16 autocast on ``device`` if ``bf16``, else a disabled autocast."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}; choose adam, sgd or adagrad")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; its state is only the step count, so it resumes exactly."""
    decay, every = cfg.lr_decay, max(steps_per_epoch, 1)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "epoch_decay":  # DIEN-style code: halve after every epoch (notes §4.4)
            return float(decay ** (step // every))
        if cfg.lr_schedule == "step_decay":  # DIN-style code: 1.0 -> 0.1 once at step 360000 (notes §1.6)
            return decay if cfg.lr_decay_steps and step >= cfg.lr_decay_steps else 1.0
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def model_output(out: Any) -> tuple[Tensor, Tensor | None]:
    """``(logits, aux_loss)`` of a model's forward output (a ``ModelOutput``)."""
    if isinstance(out, Tensor):
        return out, None
    return out.logits, getattr(out, "aux_loss", None)


def needs_negatives(model: nn.Module) -> bool:
    """Whether the model reads ``batch.neg_hist_items`` (DIEN's auxiliary loss): declared by the model class."""
    for name in ("needs_negatives", "needs_neg_hist", "requires_negatives", "uses_negatives"):
        value = getattr(model, name, None)
        if isinstance(value, bool):
            return value
    return False


@torch.no_grad()
def predict(model: nn.Module, loader: BatchLoader, device: torch.device, bf16: bool = False) -> tuple[np.ndarray, ...]:
    """``(users, labels, logits)`` of a whole split as float64/int64 numpy arrays, in loader order."""
    was_training = model.training
    model.eval()
    users: list[Tensor] = []
    labels: list[Tensor] = []
    logits: list[Tensor] = []
    for batch in loader:
        with forward_autocast(device, bf16):
            logit, _ = model_output(model(batch.to(device)))
        if not logits:
            fault_point("eval")
        logits.append(logit.detach().double().cpu())
        labels.append(batch.label if batch.label is not None else torch.zeros(batch.size))
        users.append(batch.user if batch.user is not None else torch.zeros(batch.size, dtype=torch.int64))
    model.train(was_training)
    if not logits:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    return (
        torch.cat(users).numpy().astype(np.int64),
        torch.cat(labels).numpy().astype(np.float64),
        torch.cat(logits).numpy(),
    )


def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device,
    ctx: DistContext | None = None,
    bf16: bool = False,
) -> dict[str, float]:
    """AUC, GAUC, logloss and the DIN pairwise accuracy of one split (see :mod:`dhan.metrics`).

    Distributed, ``loader`` holds this rank's shard (:func:`_shard`): rank 0 gathers every rank's scores in rank
    order (the split's order), computes the metrics and broadcasts them.
    """
    part = predict(model, loader, device, bf16)
    if ctx is None or not ctx.enabled:
        return _metrics(*part)
    parts = ctx.gather(part)
    return ctx.on_main(lambda: _metrics(*(np.concatenate(cols) for cols in zip(*(parts or []), strict=True))))


def _metrics(users: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    if not np.isfinite(logits).all():
        raise NonFiniteLossError("the model produced NaN or infinite scores; the checkpoint is damaged or diverged")
    out = classification_metrics(labels, logits, users)
    out["samples"] = float(labels.size)
    return out


def versions() -> dict[str, Any]:
    """Package versions and the git revision of the source tree (when it is a git checkout)."""
    out: dict[str, Any] = {"dhan": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("numpy", "polars", "scipy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        out["git_revision"] = rev
        out["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        out["git_revision"] = None
    return out


def set_threads(num_threads: int, processes_per_node: int = 1) -> None:
    """``train.num_threads`` torch threads; 0 = this process's share of the cores."""
    share = max((os.cpu_count() or 1) // max(processes_per_node, 1), 1)
    torch.set_num_threads(num_threads if num_threads > 0 else share)


# --------------------------------------------------------------------------- the loop


@dataclass
class _Progress:
    """Where training stands; stored in ``last.pt`` as plain values."""

    step: int = 0
    epoch: int = 0  # epoch being trained
    batch: int = 0  # next batch of that epoch
    samples: int = 0
    train_seconds: float = 0.0
    best_auc: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    loss_sum: float = 0.0  # since the last evaluation
    loss_count: int = 0
    last_eval_step: int = -1
    stop_reason: str = ""


class _StopFlag:
    """Set by the first Ctrl-C or SIGTERM: the loop finishes the current step, saves ``last.pt`` and stops."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if self.requested:  # second signal: stop at once
                for s, h in previous.items():
                    signal.signal(s, h)
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after this step (Ctrl-C again to abort without saving)")

        for s in self.SIGNALS:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _shard(samples: SampleTable, ctx: DistContext) -> SampleTable:
    """This rank's contiguous share of an evaluation split (every sample is scored exactly once)."""
    if not ctx.enabled:
        return samples
    bounds = np.linspace(0, len(samples), ctx.world_size + 1).round().astype(np.int64)
    a, b = int(bounds[ctx.rank]), int(bounds[ctx.rank + 1])
    return SampleTable(samples.user[a:b], samples.position[a:b], samples.target[a:b], samples.label[a:b])


def _loaders(
    data: PreparedData, rc: RunConfig, with_negatives: bool, ctx: DistContext
) -> tuple[BatchLoader, BatchLoader | None, BatchLoader | None]:
    hist = HistoryTensors(data)
    cfg = rc.train
    train_max = rc.data.max_len or None
    eval_max = rc.data.eval_max_len or train_max
    train = BatchLoader(
        hist,
        data.split("train"),
        cfg.batch_size // ctx.world_size,
        shuffle=True,
        seed=cfg.seed,
        max_len=train_max,
        with_negatives=with_negatives,
        rank=ctx.rank,
        world_size=ctx.world_size,
        bucket_batches=cfg.bucket_batches,
    )

    def eval_loader(split: str) -> BatchLoader | None:
        samples = data.split(split)
        if len(samples) == 0:
            return None
        return BatchLoader(
            hist,
            _shard(samples, ctx),
            cfg.eval_batch_size,
            shuffle=False,
            max_len=eval_max,
            with_negatives=with_negatives,
            bucket_batches=2,  # sorted by history length: metrics do not depend on the order, padding does
        )

    return train, eval_loader("valid"), eval_loader("test")


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tensorboard(run: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run / "tensorboard"))


def _truncate_metrics_log(path: Path, step: int) -> None:
    """Drop lines written after the checkpoint a resumed run starts from (they will be written again).

    A line cut short by a crash while it was appended is dropped too.
    """
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def prepare_run_dir(run: Path, resume: bool) -> None:
    if run.exists() and not run.is_dir():
        raise UserError(f"{run}: exists and is not a directory; choose another --out")
    if not resume and run.is_dir() and any(run.iterdir()):
        raise UserError(f"{run}: already holds a run; continue it with --resume or choose another --out")
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{run}: cannot create the run directory ({exc.strerror})") from None


def _open_run(run: Path, resume: bool) -> dict[str, Any]:
    """Rank 0's view of the run directory: ``finished`` metrics, or the saved config and checkpoint to resume."""
    prepare_run_dir(run, resume)
    last_path = run / "last.pt"
    if resume and (run / "metrics.json").is_file():
        log.info("%s: already finished; not retraining", run)
        return {"finished": read_json(run / "metrics.json")}
    if not resume:
        return {}
    for tmp in remove_stale_temp_files(run):
        log.info("%s: removed %s, left by an interrupted write", run, tmp.name)
    if not last_path.is_file() and not previous_path(last_path).is_file():
        if any(run.iterdir()):
            # a run that died before its first checkpoint: start it again from scratch
            for name in ("metrics.jsonl", "best.pt"):
                (run / name).unlink(missing_ok=True)
            log.info("%s: no checkpoint to resume from; starting from step 0", run)
        return {}
    ckpt, used = load_last_checkpoint(last_path)
    if used != last_path:
        log.warning("%s: resuming from %s (last.pt is missing or damaged)", run, used.name)
    return {"resolved": read_json(run / "config.json"), "ckpt": ckpt}


def fit(
    rc: RunConfig,
    data: PreparedData,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any] | None:
    """Train ``rc.model_name`` on ``data`` into the run directory ``out_dir``; return ``metrics.json``'s content.

    With ``resume=True`` an existing run continues from ``last.pt`` (or ``last.prev.pt`` when ``last.pt`` is
    damaged) with its saved config (``rc`` only supplies what is missing in a fresh directory). ``stop_after``
    stops, as Ctrl-C does, after that many steps in total and returns None; the run can be resumed. A finished
    run is not retrained: its metrics are returned. Under torchrun every rank calls this with the same arguments.
    """
    with distributed(rc.train.device) as ctx:
        return _fit(ctx, rc, data, Path(out_dir), resume, progress, stop_after, on_eval)


def _user_names(data: PreparedData, users: Tensor | None) -> str:
    if users is None:
        return "unknown"
    idx = users.tolist()
    names = [data.user_raw_ids[u] if 0 <= u < len(data.user_raw_ids) else f"#{u}" for u in idx[:10]]
    return ", ".join(names) + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")


def _fit(
    ctx: DistContext,
    rc: RunConfig,
    data: PreparedData,
    run: Path,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    on_eval: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any] | None:
    main = ctx.is_main
    last_path = run / "last.pt"
    opened = ctx.on_main(lambda: _open_run(run, resume))
    if "finished" in opened:
        return dict(opened["finished"])
    ckpt: dict[str, Any] | None = opened.get("ckpt")
    if ckpt is not None:
        rc = run_config_from_resolved(opened["resolved"])
    cfg = rc.train
    if cfg.batch_size % ctx.world_size:
        raise UserError(
            f"train.batch_size={cfg.batch_size} is the global batch and must be divisible by the {ctx.world_size} "
            f"processes; use a multiple of {ctx.world_size}"
        )
    set_threads(cfg.num_threads, ctx.local_world_size)
    device = resolve_device(cfg.device, ctx)
    bf16 = use_bf16(cfg.precision, device)
    _seed_everything(cfg.seed)
    model = build_model(rc.model_name, data.schema, rc.model_overrides, rc.preset).to(device)
    if ctx.rank:  # the same initial weights everywhere; each rank's own random stream from here on
        torch.manual_seed(cfg.seed + 1_000_003 * ctx.rank)
    train_loader, valid_loader, test_loader = _loaders(data, rc, needs_negatives(model), ctx)
    select_split = "test" if cfg.protocol == "paper" else "valid"
    select_loader = test_loader if cfg.protocol == "paper" else valid_loader
    if len(train_loader) == 0:
        raise UserError(f"{rc.data.path or 'the dataset'}: the train split is empty; re-run `dhan prepare`")
    if select_loader is None:
        hint = "re-prepare with a validation split" if select_split == "valid" else "re-prepare with a test split"
        raise UserError(f"the dataset has no {select_split} samples to select the checkpoint on; {hint}")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    prog = _Progress()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        prog = _Progress(**{f.name: ckpt["progress"][f.name] for f in fields(_Progress)})
        saved_world = int(ckpt.get("world_size", 1))
        rngs = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if saved_world != ctx.world_size and main:
            log.warning(
                "%s: the checkpoint was written by %d processes, this run has %d; it continues at the same global "
                "batch but is not bitwise identical to an uninterrupted run",
                run,
                saved_world,
                ctx.world_size,
            )
        if ctx.rank < len(rngs):
            set_rng_state(rngs[ctx.rank])
        if main:
            _truncate_metrics_log(run / "metrics.jsonl", prog.step)
            log.info("%s: resuming at step %d (epoch %d, batch %d)", run, prog.step, prog.epoch, prog.batch)
        del ckpt
    elif main:
        resolved = rc.resolved(model_config_dict(model, rc.model_overrides))
        atomic_write_text(run / "config.json", json.dumps(resolved, indent=2) + "\n")
        atomic_write_text(run / "schema.json", json.dumps(data.schema.to_dict(), indent=2) + "\n")
        atomic_write_text(run / "versions.json", json.dumps(versions(), indent=2) + "\n")
    if cfg.protocol == "paper" and main:
        log.warning("protocol %s", BIASED_LABEL)
    net: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    loss_fn = nn.BCEWithLogitsLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    writer = _tensorboard(run) if main else None
    stop = _StopFlag()
    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=prog.step,
        desc=f"{rc.model_name} seed {cfg.seed}",
        unit="step",
        file=sys.stderr,
        disable=not (progress and main),
        dynamic_ncols=True,
        leave=False,
    )
    window_loss, window_count = 0.0, 0

    def save_last() -> None:
        for name, value in model.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise NonFiniteLossError(
                    f"the weights {name} are NaN or infinite at step {prog.step}; not saving them. Lower the "
                    "learning rate (--set train.lr=...) or clip gradients (--set train.grad_clip=5)"
                )
        rngs = ctx.gather(rng_state())
        if not main:
            return
        assert rngs is not None
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": "last",
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rngs[0],
                "rng_ranks": rngs,
                "world_size": ctx.world_size,
                "progress": asdict(prog),
            },
            last_path,
            keep_previous=True,
        )

    def run_evaluation() -> bool:
        """Evaluate, log, keep the best; True when early stopping says stop."""
        assert select_loader is not None
        t0 = time.perf_counter()
        m = evaluate(model, select_loader, device, ctx, bf16)
        line: dict[str, Any] = {
            "step": prog.step,
            "epoch": prog.epoch + prog.batch / steps_per_epoch,
            "train_loss": prog.loss_sum / prog.loss_count if prog.loss_count else None,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_second": prog.samples / prog.train_seconds if prog.train_seconds else None,
            "eval_split": select_split,
            "eval_seconds": time.perf_counter() - t0,
        }
        line.update({f"{select_split}_{k}": m[k] for k in REPORTED})
        prog.loss_sum, prog.loss_count = 0.0, 0
        prog.last_eval_step = prog.step
        current = m["auc"]
        improved = math.isfinite(current) and current > prog.best_auc + cfg.min_delta
        if improved or prog.best_step < 0:
            prog.best_auc = current if math.isfinite(current) else prog.best_auc
            prog.best_step = prog.step
            prog.bad_evals = 0
            if main:
                atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "kind": "best",
                        "model": model.state_dict(),
                        "step": prog.step,
                        "metrics": {k: float(v) for k, v in m.items()},
                    },
                    run / "best.pt",
                )
        else:
            prog.bad_evals += 1
        line["best_step"] = prog.best_step
        if main:
            with open(run / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(line) + "\n")
        if writer is not None:
            for key in ("train_loss", f"{select_split}_auc", f"{select_split}_gauc", f"{select_split}_logloss"):
                if line.get(key) is not None:
                    writer.add_scalar(key, line[key], prog.step)
        if on_eval is not None and main:
            on_eval(line)
        bar.set_postfix_str(f"{select_split} auc {current:.4f} best@{prog.best_step}", refresh=False)
        if cfg.patience and prog.bad_evals >= cfg.patience:
            prog.stop_reason = f"early stop: no better {select_split} AUC in {cfg.patience} evaluations"
            return True
        return False

    finished = False
    with stop.installed():
        try:
            while not prog.stop_reason:
                if cfg.epochs and prog.epoch >= cfg.epochs:
                    prog.stop_reason = f"{cfg.epochs} epochs"
                    break
                train_loader.set_epoch(prog.epoch, prog.batch)
                for batch in train_loader:
                    t0 = time.perf_counter()
                    loss_value, samples, stop_requested = _train_step(
                        net,
                        batch.to(device),
                        loss_fn,
                        optimizer,
                        scheduler,
                        params,
                        clip,
                        prog,
                        ctx,
                        stop.requested,
                        functools.partial(_user_names, data, batch.user),
                        device if bf16 else None,
                    )
                    prog.train_seconds += time.perf_counter() - t0
                    prog.step += 1
                    prog.batch += 1
                    prog.samples += samples
                    prog.loss_sum += loss_value
                    prog.loss_count += 1
                    window_loss += loss_value
                    window_count += 1
                    bar.update(1)
                    if prog.step % cfg.log_every == 0 or prog.step == total_steps:
                        rate = prog.samples / prog.train_seconds if prog.train_seconds else 0.0
                        bar.set_description_str(
                            f"{rc.model_name} seed {cfg.seed} loss {window_loss / window_count:.4f} "
                            f"{rate:,.0f} samples/s",
                            refresh=False,
                        )
                        if writer is not None:
                            writer.add_scalar("train_loss_running", window_loss / window_count, prog.step)
                        window_loss, window_count = 0.0, 0
                    epoch_end = prog.batch >= steps_per_epoch
                    if epoch_end:
                        prog.epoch += 1
                        prog.batch = 0
                    reached_max = bool(cfg.max_steps) and prog.step >= cfg.max_steps
                    due = (cfg.eval_every and prog.step % cfg.eval_every == 0) or (not cfg.eval_every and epoch_end)
                    saved = False
                    if due or reached_max:
                        if run_evaluation():
                            save_last()
                            break
                        save_last()
                        saved = True
                    if reached_max:
                        prog.stop_reason = f"max_steps {cfg.max_steps}"
                        break
                    if stop_requested or (stop_after is not None and prog.step >= stop_after):
                        if not saved:
                            save_last()
                        if stop_requested:
                            raise KeyboardInterrupt
                        if main:
                            log.info("%s: stopped at step %d; continue with --resume", run, prog.step)
                        return None
                    if cfg.checkpoint_every and prog.step % cfg.checkpoint_every == 0 and not saved:
                        save_last()
                    if epoch_end:
                        break
            if prog.last_eval_step != prog.step and not prog.stop_reason.startswith("early"):
                run_evaluation()
            if not prog.stop_reason:
                prog.stop_reason = "done"
            save_last()
            finished = True
        except KeyboardInterrupt:
            if main:
                log.warning(
                    "%s: interrupted at step %d; continue with `dhan train --resume --out %s`", run, prog.step, run
                )
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    assert finished
    return _finish(model, rc, run, prog, valid_loader, test_loader, device, ctx, bf16)


def _train_step(
    net: nn.Module,
    batch: Batch,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    clip: float,
    prog: _Progress,
    ctx: DistContext,
    stop_requested: bool,
    users: Callable[[], str],
    bf16_device: torch.device | None = None,
) -> tuple[float, int, bool]:
    """One optimiser step; ``(loss of the global batch, its samples, whether any rank asked to stop)``.

    A non-finite loss on any rank raises :class:`NonFiniteLossError` on every rank before the backward pass.
    Distributed, the ranks' losses, sample counts and stop requests are summed in one small all-reduce first, and
    each rank's loss is weighted by ``world_size * samples / global samples``: DDP's average of the gradients is
    then the gradient of the mean loss over the global batch, as in one process.
    """
    net.train()
    with forward_autocast(bf16_device or torch.device("cpu"), bf16_device is not None):
        logits, aux = model_output(net(batch))
    assert batch.label is not None
    loss = loss_fn(logits.float(), batch.label)  # the loss in float32 under bf16 autocast
    if aux is not None:
        loss = loss + aux.float()
    value = float(loss.detach())
    samples = batch.size
    finite = math.isfinite(value)
    bad = not finite
    if ctx.enabled:
        total, loss_sum, bad_ranks, stops = ctx.all_sum([samples, value * samples, float(bad), float(stop_requested)])
        bad = bad_ranks > 0
        if not bad:
            loss = loss * (ctx.world_size * samples / total)
            value, samples, stop_requested = loss_sum / total, int(total), stops > 0
    if bad:
        where = f"at step {prog.step + 1} (epoch {prog.epoch}, batch {prog.batch})"
        who = f"the batch of users {users()}" if not finite else f"another process's batch (rank {ctx.rank} is fine)"
        raise NonFiniteLossError(
            f"the training loss is {value if not finite else 'NaN or infinite'} {where} on {who}; the step was not "
            "applied and no NaN weights were saved. Lower the learning rate (--set train.lr=...), clip gradients "
            "(--set train.grad_clip=5), or check these users' data, and train again"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    fault_point("step")
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    if not torch.isfinite(norm):
        raise NonFiniteLossError(
            f"the gradient norm is {float(norm)} at step {prog.step + 1} (epoch {prog.epoch}, batch {prog.batch}); "
            "the step was not applied and no NaN weights were saved. Lower the learning rate (--set train.lr=...) "
            "or clip gradients (--set train.grad_clip=5), check the data, and train again"
        )
    optimizer.step()
    scheduler.step()
    return value, samples, stop_requested


def _finish(
    model: nn.Module,
    rc: RunConfig,
    run: Path,
    prog: _Progress,
    valid_loader: BatchLoader | None,
    test_loader: BatchLoader | None,
    device: torch.device,
    ctx: DistContext,
    bf16: bool,
) -> dict[str, Any]:
    """Load the best checkpoint, score valid and test once, write ``metrics.json`` (rank 0)."""
    best = ctx.on_main(lambda: load_checkpoint(run / "best.pt"))
    model.load_state_dict(best["model"])

    def scored(loader: BatchLoader | None) -> dict[str, float] | None:
        if loader is None:
            return None
        m = evaluate(model, loader, device, ctx, bf16)
        return {k: m[k] for k in (*REPORTED, "samples")}

    cfg = rc.train
    if cfg.protocol == "valid" and set(REPORTED) <= set(best.get("metrics", {})):
        # the best checkpoint was chosen by exactly this evaluation; scoring valid again would repeat it
        valid: dict[str, float] | None = {k: best["metrics"][k] for k in (*REPORTED, "samples")}
    else:
        valid = scored(valid_loader)
    test = scored(test_loader)
    metrics: dict[str, Any] = {
        "model": rc.model_name,
        "seed": cfg.seed,
        "best_step": prog.best_step,
        "valid": valid,
        "test": test,
        "train_samples_per_second": prog.samples / prog.train_seconds if prog.train_seconds else None,
        "train_seconds": prog.train_seconds,
        "protocol": cfg.protocol if cfg.protocol == "valid" else BIASED_LABEL,
        "selected_on": "test" if cfg.protocol == "paper" else "valid",
        "steps": prog.step,
        "epochs_completed": prog.epoch,
        "stop_reason": prog.stop_reason,
        "processes": ctx.world_size,
    }
    metrics = ctx.broadcast(metrics)  # rank 0's timings, so every rank returns the same dict
    if not ctx.is_main:
        return metrics
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    t = test or {}
    log.info(
        "%s: best step %d; test auc %.4f gauc %.4f logloss %.4f%s",
        run,
        prog.best_step,
        t.get("auc", float("nan")),
        t.get("gauc", float("nan")),
        t.get("logloss", float("nan")),
        "  [BIASED: selected on test]" if cfg.protocol == "paper" else "",
    )
    return metrics
