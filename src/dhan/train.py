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
order depends only on ``(seed, epoch)`` and every RNG state is restored.

The run directory::

    config.json     resolved run config (model, train, data)
    schema.json     the dataset's schema, to rebuild the model without the dataset
    versions.json   package versions and the git revision
    metrics.jsonl   one line per evaluation
    metrics.json    final summary: best step, valid and test metrics, throughput
    best.pt         weights at the selected evaluation
    last.pt         full training state at the last evaluation (for --resume)
"""

from __future__ import annotations

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
    model_config_dict,
    read_json,
    rng_state,
    set_rng_state,
)
from dhan.config import RunConfig, TrainConfig, run_config_from_resolved
from dhan.data.loader import BatchLoader, HistoryTensors
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.metrics import classification_metrics

log = logging.getLogger(__name__)

BIASED_LABEL = "paper (BIASED: checkpoint selected on the test set, as the authors' code did)"
REPORTED = ("auc", "gauc", "logloss", "din_pairwise_accuracy")


class NonFiniteLossError(UserError):
    """The loss or the gradient became NaN or infinite; the step was not applied."""


# --------------------------------------------------------------------------- building blocks


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


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
def predict(model: nn.Module, loader: BatchLoader, device: torch.device) -> tuple[np.ndarray, ...]:
    """``(users, labels, logits)`` of a whole split as float64/int64 numpy arrays, in loader order."""
    was_training = model.training
    model.eval()
    users, labels, logits = [], [], []
    for batch in loader:
        logit, _ = model_output(model(batch.to(device)))
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


def evaluate(model: nn.Module, loader: BatchLoader, device: torch.device) -> dict[str, float]:
    """AUC, GAUC, logloss and the DIN pairwise accuracy of one split (see :mod:`dhan.metrics`)."""
    users, labels, logits = predict(model, loader, device)
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


def set_threads(num_threads: int) -> None:
    torch.set_num_threads(num_threads if num_threads > 0 else max(os.cpu_count() or 1, 1))


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
    """Set by the first Ctrl-C: the loop finishes the current step, saves ``last.pt`` and stops."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self.requested:  # second Ctrl-C: stop at once
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after this step (Ctrl-C again to abort without saving)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _loaders(
    data: PreparedData, rc: RunConfig, with_negatives: bool
) -> tuple[BatchLoader, BatchLoader | None, BatchLoader | None]:
    hist = HistoryTensors(data)
    cfg = rc.train
    train_max = rc.data.max_len or None
    eval_max = rc.data.eval_max_len or train_max
    train = BatchLoader(
        hist,
        data.split("train"),
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        max_len=train_max,
        with_negatives=with_negatives,
    )

    def eval_loader(split: str) -> BatchLoader | None:
        samples = data.split(split)
        if len(samples) == 0:
            return None
        return BatchLoader(
            hist, samples, cfg.eval_batch_size, shuffle=False, max_len=eval_max, with_negatives=with_negatives
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
    """Drop lines written after the checkpoint a resumed run starts from (they will be written again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
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

    With ``resume=True`` an existing run continues from ``last.pt`` with its saved config (``rc`` only supplies
    what is missing in a fresh directory). ``stop_after`` stops, as Ctrl-C does, after that many steps in total
    and returns None; the run can be resumed. A finished run is not retrained: its metrics are returned.
    """
    run = Path(out_dir)
    prepare_run_dir(run, resume)
    last_path = run / "last.pt"
    if resume and (run / "metrics.json").is_file():
        log.info("%s: already finished; not retraining", run)
        return read_json(run / "metrics.json")
    resuming = resume and last_path.is_file()
    if resume and not resuming and any(run.iterdir()):
        # a run that died before its first checkpoint: start it again from scratch
        for name in ("metrics.jsonl", "best.pt"):
            (run / name).unlink(missing_ok=True)
        log.info("%s: no checkpoint to resume from; starting from step 0", run)
    if resuming:
        rc = run_config_from_resolved(read_json(run / "config.json"))
    cfg = rc.train
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    model = build_model(rc.model_name, data.schema, rc.model_overrides, rc.preset).to(device)
    train_loader, valid_loader, test_loader = _loaders(data, rc, needs_negatives(model))
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
    if resuming:
        ckpt = load_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        prog = _Progress(**{f.name: ckpt["progress"][f.name] for f in fields(_Progress)})
        set_rng_state(ckpt["rng"])
        _truncate_metrics_log(run / "metrics.jsonl", prog.step)
        log.info("%s: resuming at step %d (epoch %d, batch %d)", run, prog.step, prog.epoch, prog.batch)
    else:
        resolved = rc.resolved(model_config_dict(model, rc.model_overrides))
        atomic_write_text(run / "config.json", json.dumps(resolved, indent=2) + "\n")
        atomic_write_text(run / "schema.json", json.dumps(data.schema.to_dict(), indent=2) + "\n")
        atomic_write_text(run / "versions.json", json.dumps(versions(), indent=2) + "\n")
    if cfg.protocol == "paper":
        log.warning("protocol %s", BIASED_LABEL)

    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    loss_fn = nn.BCEWithLogitsLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    writer = _tensorboard(run)
    stop = _StopFlag()
    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=prog.step,
        desc=f"{rc.model_name} seed {cfg.seed}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    window_loss, window_count = 0.0, 0

    def save_last() -> None:
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": "last",
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "progress": asdict(prog),
            },
            last_path,
        )

    def run_evaluation() -> bool:
        """Evaluate, log, keep the best; True when early stopping says stop."""
        assert select_loader is not None
        t0 = time.perf_counter()
        m = evaluate(model, select_loader, device)
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
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        if writer is not None:
            for key in ("train_loss", f"{select_split}_auc", f"{select_split}_gauc", f"{select_split}_logloss"):
                if line.get(key) is not None:
                    writer.add_scalar(key, line[key], prog.step)
        if on_eval is not None:
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
                    loss_value = _train_step(model, batch.to(device), loss_fn, optimizer, scheduler, params, clip, prog)
                    prog.train_seconds += time.perf_counter() - t0
                    prog.step += 1
                    prog.batch += 1
                    prog.samples += batch.size
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
                    if due or reached_max:
                        if run_evaluation():
                            save_last()
                            break
                        save_last()
                    if reached_max:
                        prog.stop_reason = f"max_steps {cfg.max_steps}"
                        break
                    if stop.requested or (stop_after is not None and prog.step >= stop_after):
                        save_last()
                        if stop.requested:
                            raise KeyboardInterrupt
                        log.info("%s: stopped at step %d; continue with --resume", run, prog.step)
                        return None
                    if epoch_end:
                        break
            if prog.last_eval_step != prog.step and not prog.stop_reason.startswith("early"):
                run_evaluation()
            if not prog.stop_reason:
                prog.stop_reason = "done"
            save_last()
            finished = True
        except KeyboardInterrupt:
            log.warning("%s: interrupted at step %d; continue with `dhan train --resume --out %s`", run, prog.step, run)
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    assert finished
    return _finish(model, rc, run, prog, valid_loader, test_loader, device)


def _train_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    clip: float,
    prog: _Progress,
) -> float:
    model.train()
    logits, aux = model_output(model(batch))
    assert batch.label is not None
    loss = loss_fn(logits, batch.label)
    if aux is not None:
        loss = loss + aux
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss is {value} at step {prog.step + 1} (epoch {prog.epoch}); the step was not applied "
            "and no NaN weights were saved. Lower the learning rate (--set train.lr=...) or clip gradients "
            "(--set train.grad_clip=5) and train again"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    if not torch.isfinite(norm):
        raise NonFiniteLossError(
            f"the gradient norm is {float(norm)} at step {prog.step + 1} (epoch {prog.epoch}); the step was not "
            "applied and no NaN weights were saved. Lower the learning rate (--set train.lr=...) or clip "
            "gradients (--set train.grad_clip=5) and train again"
        )
    optimizer.step()
    scheduler.step()
    return value


def _finish(
    model: nn.Module,
    rc: RunConfig,
    run: Path,
    prog: _Progress,
    valid_loader: BatchLoader | None,
    test_loader: BatchLoader | None,
    device: torch.device,
) -> dict[str, Any]:
    """Load the best checkpoint, score valid and test once, write ``metrics.json``."""
    best = load_checkpoint(run / "best.pt")
    model.load_state_dict(best["model"])

    def scored(loader: BatchLoader | None) -> dict[str, float] | None:
        if loader is None:
            return None
        m = evaluate(model, loader, device)
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
    }
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
