"""Evaluation metrics as plain functions on numpy arrays, computed in float64.

Three different numbers are called "AUC" or "GAUC" in this field; each has its own name here:

* :func:`auc`: the global ROC-AUC over all scored samples. Ties count one half (the Mann-Whitney statistic via
  average ranks), so it equals ``sklearn.metrics.roc_auc_score``.
* :func:`gauc`: the DIN paper's group AUC: the AUC of every user's own samples, averaged with weights equal to
  the user's number of impressions (samples). Users whose samples are all of one class have no AUC and are
  skipped.
* :func:`din_pairwise_accuracy`: what the DIN and DHAN code print as "GAUC": the fraction of (positive,
  negative) pairs of the same user in which the positive scores strictly higher. Ties count as wrong, so it is
  at most the tie-half AUC. With one positive and one negative per user (the DIN-style test set) it is the
  fraction of users ranked correctly (reference notes §1.7).

:func:`relaimpr` is the paper's Eq. 3.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def _as_labels_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.shape[0]} entries and scores {s.shape[0]}; expected the same number")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(bool), s


def _pair_counts(
    groups: npt.NDArray[np.int64], y: npt.NDArray[np.bool_], s: FloatArray
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per group: (group id, positives, negatives, pairs won with ties as half, tied pairs).

    One sort by (group, score); average ranks within each group come from the tie blocks of (group, score).
    """
    order = np.lexsort((s, groups))
    g, ys, ss = groups[order], y[order], s[order]
    n = g.size
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (g[1:] != g[:-1]) | (ss[1:] != ss[:-1])
    block = np.cumsum(new_block) - 1  # tie block of every sample
    block_start = np.flatnonzero(new_block)
    block_size = np.diff(np.append(block_start, n))
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.flatnonzero(new_group)
    group_index = np.cumsum(new_group) - 1
    # average 1-based rank of each block inside its group
    block_group_start = group_start[group_index[block_start]]
    block_rank = (block_start - block_group_start) + (block_size + 1) / 2.0
    rank = block_rank[block]
    num_groups = group_start.size
    pos = np.bincount(group_index, weights=ys.astype(np.float64), minlength=num_groups)
    size = np.bincount(group_index, minlength=num_groups).astype(np.float64)
    neg = size - pos
    rank_sum = np.bincount(group_index, weights=np.where(ys, rank, 0.0), minlength=num_groups)
    wins = rank_sum - pos * (pos + 1) / 2.0  # Mann-Whitney U of the positives, ties as half
    block_pos = np.bincount(block, weights=ys.astype(np.float64), minlength=block_start.size)
    block_neg = block_size - block_pos
    ties = np.bincount(group_index[block_start], weights=block_pos * block_neg, minlength=num_groups)
    return g[group_start], pos.astype(np.float64), neg.astype(np.float64), wins, ties.astype(np.float64)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Exact ROC-AUC; ties count one half. NaN when only one class is present."""
    y, s = _as_labels_scores(labels, scores)
    if y.size == 0:
        return float("nan")
    _, pos, neg, wins, _ = _pair_counts(np.zeros(y.size, dtype=np.int64), y, s)
    if pos[0] == 0 or neg[0] == 0:
        return float("nan")
    return float(wins[0] / (pos[0] * neg[0]))


def _as_labels_scores_users(
    labels: ArrayLike, scores: ArrayLike, users: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, s = _as_labels_scores(labels, scores)
    u = np.asarray(users, dtype=np.int64).reshape(-1)
    if u.shape != y.shape:
        raise ValueError(f"users has {u.shape[0]} entries and labels {y.shape[0]}; expected the same number")
    return y, s, u


def gauc(labels: ArrayLike, scores: ArrayLike, users: ArrayLike) -> float:
    """Impression-weighted mean of per-user AUCs (DIN paper, Eq. 1); users with one class are skipped.

    NaN when no user has both classes.
    """
    y, s, u = _as_labels_scores_users(labels, scores, users)
    if y.size == 0:
        return float("nan")
    _, pos, neg, wins, _ = _pair_counts(u, y, s)
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return float("nan")
    per_user = wins[ok] / (pos[ok] * neg[ok])
    weight = (pos + neg)[ok]
    return float(np.sum(per_user * weight) / np.sum(weight))


def din_pairwise_accuracy(labels: ArrayLike, scores: ArrayLike, users: ArrayLike) -> float:
    """Fraction of same-user (positive, negative) pairs where the positive scores strictly higher.

    The DIN/DHAN code's "GAUC" (``mean(score_pos > score_neg)``; ties count as wrong). NaN without any pair.
    """
    y, s, u = _as_labels_scores_users(labels, scores, users)
    if y.size == 0:
        return float("nan")
    _, pos, neg, wins, ties = _pair_counts(u, y, s)
    pairs = float(np.sum(pos * neg))
    if pairs == 0:
        return float("nan")
    strict = np.sum(wins - 0.5 * ties)
    return float(strict / pairs)


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]`` (no infinite loss)."""
    y, p = _as_labels_scores(labels, probs)
    if y.size == 0:
        return float("nan")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1]; pass sigmoid(logits)")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def relaimpr(auc_model: float, auc_base: float) -> float:
    """Relative improvement in percent, paper Eq. 3: ``((AUC_model - 0.5) / (AUC_base - 0.5) - 1) * 100``."""
    if auc_base == 0.5:
        return float("nan")
    return float(((auc_model - 0.5) / (auc_base - 0.5) - 1.0) * 100.0)


def sigmoid(logits: ArrayLike) -> FloatArray:
    """Numerically stable logistic function in float64."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def classification_metrics(labels: ArrayLike, logits: ArrayLike, users: ArrayLike) -> dict[str, float]:
    """All metrics of one evaluation from the same arrays: auc, gauc, logloss, din_pairwise_accuracy."""
    # ranks on the logits: sigmoid saturates to 1.0 in float64 beyond ~37 and would create false ties
    x = np.asarray(logits, dtype=np.float64)
    return {
        "auc": auc(labels, x),
        "gauc": gauc(labels, x, users),
        "logloss": logloss(labels, sigmoid(x)),
        "din_pairwise_accuracy": din_pairwise_accuracy(labels, x, users),
    }
