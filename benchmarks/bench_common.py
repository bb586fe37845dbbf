"""Shared by the benchmark scripts (and the DeepCTR-Torch worker): synthetic arrays, model shapes, FLOP counter.

Only numpy and torch here: ``deepctr_worker.py`` imports this file inside the separate DeepCTR-Torch virtualenv,
where the ``dhan`` package is not installed.

Synthetic histories (fixed seed): ``num_items`` items, item ``i`` belongs to category ``1 + (i - 2) % C`` (ids as in
a prepared dataset: 0 padding, 1 unknown, real ids from 2). Each user favours 5 categories with Dirichlet weights;
a behaviour comes from a favourite category with probability 0.8, else from any category (``structured``), or from
any category always (``uniform``, the worst case for DHAN: every row has up to T distinct groups). Histories are
full length (every row has T real items), as the issue asks.
"""

from __future__ import annotations

import itertools
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NUM_ITEMS = 50_000  # real items (vocabulary = NUM_ITEMS + 2)
EMBED_DIM = 64  # item and category embedding sizes (D = 128 after the join), as the DIN/DHAN code
ATT_HIDDEN = (80, 40)  # activation unit, sigmoid
HEAD_HIDDEN = (200, 80)  # head MLP
# ReLU: DeepCTR-Torch 0.3.0 DNN(activation="dice") asserts 3-D input and fails on DIN's 2-D head input
HEAD_ACTIVATION = "relu"
AUX_HIDDEN = (100, 50)  # DIEN auxiliary net, sigmoid
FAVOURITES = 5
FAVOURITE_SHARE = 0.8


@dataclass
class Arrays:
    """One benchmark data set: ``n`` samples of history length ``t`` (all numpy int64 / float32)."""

    target_item: np.ndarray  # (n,)
    target_cate: np.ndarray  # (n,)
    hist_item: np.ndarray  # (n, t)
    hist_cate: np.ndarray  # (n, t)
    neg_item: np.ndarray  # (n, t)
    neg_cate: np.ndarray  # (n, t)
    label: np.ndarray  # (n,) float32
    item_cate: np.ndarray  # (NUM_ITEMS + 2,) category of each item id


def item_category(num_categories: int) -> np.ndarray:
    ids = np.arange(NUM_ITEMS + 2)
    cate = 1 + (ids - 2) % num_categories + 1  # category ids 2 .. C+1
    cate[:2] = ids[:2]
    return cate.astype(np.int64)


def make_arrays(n: int, t: int, num_categories: int, seed: int = 0, kind: str = "structured") -> Arrays:
    rng = np.random.default_rng([seed, t, num_categories, 0 if kind == "structured" else 1])
    item_cate = item_category(num_categories)
    per_cate = NUM_ITEMS // num_categories  # items of category c (0-based): 2 + c + C * j, j < per_cate

    def draw_items(cats: np.ndarray) -> np.ndarray:
        j = rng.integers(0, per_cate, size=cats.shape)
        return 2 + cats + num_categories * j

    if kind == "structured":
        fav = rng.integers(0, num_categories, size=(n, FAVOURITES))
        weights = rng.dirichlet(np.ones(FAVOURITES), size=n)
        pick = (rng.random((n, t, 1)) > np.cumsum(weights, axis=1)[:, None, :]).sum(-1).clip(max=FAVOURITES - 1)
        cats = np.take_along_axis(fav, pick.reshape(n, t), axis=1)
        explore = rng.random((n, t)) > FAVOURITE_SHARE
        cats = np.where(explore, rng.integers(0, num_categories, size=(n, t)), cats)
    else:
        cats = rng.integers(0, num_categories, size=(n, t))
    hist = draw_items(cats)
    neg = draw_items(rng.integers(0, num_categories, size=(n, t)))
    target = draw_items(rng.integers(0, num_categories, size=n))
    label = (rng.random(n) < 0.5).astype(np.float32)
    return Arrays(target, item_cate[target], hist, item_cate[hist], neg, item_cate[neg], label, item_cate)


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs counted from the layer shapes (multiply-add = 2 FLOPs); forward + backward = 3 x forward for matmuls
# ---------------------------------------------------------------------------------------------------------------------


def mlp_flops(in_dim: int, dims: tuple[int, ...], out_dim: int | None) -> int:
    widths = [in_dim, *dims, *([out_dim] if out_dim is not None else [])]
    return sum(2 * a * b for a, b in itertools.pairwise(widths))


def activation_unit_flops(d: int, hidden: tuple[int, ...], n_keys: int, form: str = "executed") -> int:
    """One query against ``n_keys`` keys.

    ``form="model"``: the layer as defined, Linear(4D, H) on ``[q, k, q-k, q*k]`` per key (what DeepCTR-Torch
    executes; the usual "model FLOPs" of MFU). ``form="executed"``: what ``dhan.layers.ActivationUnit`` runs: for
    ``n_keys <= H / 2`` the split form (q-term once, k-term and (q*k)-term per key), above it the per-row fold (one
    (D, H) matrix built per row, one D x H product per key).
    """
    rest = mlp_flops(hidden[0], hidden[1:], 1)
    h = hidden[0]
    if form == "model":
        return n_keys * (2 * 4 * d * h + rest)
    if 2 * n_keys > h:
        return 2 * d * h + 2 * d * h + n_keys * (2 * d * h + rest)  # q-term, M = A + diag(q) P, k M per key
    return 2 * d * h + n_keys * (2 * (2 * d * h) + d + rest)  # k (Wk-Wd)^T + (q*k) Wp^T, the product


def gru_flops(in_dim: int, hidden: int, steps: int) -> int:
    return steps * (2 * in_dim * 3 * hidden + 2 * hidden * 3 * hidden)


def model_flops(model: str, t: int, groups: float, d: int = 2 * EMBED_DIM, form: str = "executed") -> int:
    """Forward FLOPs per sample of our models: Linear / GRU / pooling, level 2 over the mean number of groups.
    ``form``: the activation units as defined (``"model"``, the concatenated Linear(4D, H) that DeepCTR-Torch
    executes; its DIN / DIEN otherwise have the same layers) or as ``dhan`` executes them (see
    :func:`activation_unit_flops`)."""
    head_in = {"base": 2 * d, "din": 2 * d, "dien": 4 * d, "dhan": 3 * d, "dhan-gru": 3 * d}[model]
    f = mlp_flops(head_in, HEAD_HIDDEN, 1)
    if model == "base":
        return f + t * d
    if model in ("din", "dhan"):
        f += activation_unit_flops(d, ATT_HIDDEN, t, form) + 2 * t * d
    if model in ("dhan", "dhan-gru"):
        if model == "dhan-gru":
            f += activation_unit_flops(d, ATT_HIDDEN, t, form) + 2 * t * d  # the hierarchy's level 1 (forms the groups)
        f += 2 * t * d + activation_unit_flops(d, ATT_HIDDEN, round(groups), form) + 2 * groups * d  # Eq. 2, level 2
    if model in ("dien", "dhan-gru"):
        f += gru_flops(d, d, t) + gru_flops(d, d, t)  # extractor + AUGRU
        f += 2 * (t - 1) * mlp_flops(2 * d, AUX_HIDDEN, 1)  # auxiliary net on positives and negatives
        f += activation_unit_flops(d, ATT_HIDDEN, t, form)
    return int(f)


def training_flops(model: str, t: int, groups: float, form: str = "executed") -> int:
    return 3 * model_flops(model, t, groups, form=form)


# ---------------------------------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of this address space where Linux has it, because
    ``ru_maxrss`` survives ``fork`` + ``exec`` and would report at least the parent's memory at spawn time."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak_gflops(threads: int, n: int = 2048, seconds: float = 3.0) -> float:
    """float32 ``torch.mm`` throughput of this machine (best of several timed repeats)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b, out=out)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def time_steps(step, warmup: int, steps: int, budget_s: float) -> tuple[float, int]:
    """Seconds per step (median of the timed steps) and how many were timed; stops early past ``budget_s``."""
    for i in range(warmup):
        step(i)
    times = []
    start_all = time.perf_counter()
    for i in range(steps):
        start = time.perf_counter()
        step(warmup + i)
        times.append(time.perf_counter() - start)
        if time.perf_counter() - start_all > budget_s:
            break
    return float(np.median(times)), len(times)
