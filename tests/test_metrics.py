"""Metric values against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dhan import metrics


def test_auc_hand_computed_with_ties() -> None:
    # pairs (pos, neg): (0.9,0.1) win, (0.9,0.5) win, (0.5,0.1) win, (0.5,0.5) tie -> 3.5 / 4
    assert metrics.auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert metrics.auc([1, 0], [0.3, 0.3]) == 0.5
    assert math.isnan(metrics.auc([1, 1], [0.1, 0.2]))


def test_auc_matches_sklearn_on_random_scores_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = rng.integers(0, 20, 2000) / 20.0  # many ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_gauc_hand_computed_weights_by_impressions_and_skips_one_class_users() -> None:
    users = [0, 0, 0, 1, 1, 2, 2]
    labels = [1, 0, 0, 1, 0, 1, 1]  # user 2 has only positives: skipped
    scores = [0.9, 0.1, 0.95, 0.2, 0.8, 0.5, 0.6]
    # user 0: pos 0.9 beats 0.1, loses to 0.95 -> AUC 0.5, 3 impressions; user 1: AUC 0, 2 impressions
    assert metrics.gauc(labels, scores, users) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


def test_gauc_matches_per_user_sklearn() -> None:
    rng = np.random.default_rng(1)
    u = rng.integers(0, 40, 3000)
    y = rng.integers(0, 2, 3000)
    s = rng.normal(size=3000).round(1)
    parts = [(roc_auc_score(y[u == k], s[u == k]), (u == k).sum()) for k in np.unique(u) if len(set(y[u == k])) == 2]
    expected = sum(a * w for a, w in parts) / sum(w for _, w in parts)
    assert metrics.gauc(y, s, u) == pytest.approx(expected, abs=1e-12)


def test_din_pairwise_accuracy_counts_ties_as_wrong() -> None:
    # user 0 tied, user 1 ranked right -> 0.5; the tie-half AUC per user would give 0.75
    labels, scores, users = [1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1], [0, 0, 1, 1]
    assert metrics.din_pairwise_accuracy(labels, scores, users) == 0.5
    assert metrics.gauc(labels, scores, users) == 0.75


def test_logloss_matches_sklearn_and_is_clipped() -> None:
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.99])
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)
    assert math.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))


def test_relaimpr_is_paper_eq3_in_percent() -> None:
    # Table 2, Electronics: DHAN 0.9363 vs DIN 0.8605 -> 21.03%
    assert metrics.relaimpr(0.9363, 0.8605) == pytest.approx(21.03, abs=0.01)
    assert metrics.relaimpr(0.8605, 0.8605) == 0.0


def test_classification_metrics_ranks_on_logits_not_saturated_probabilities() -> None:
    # sigmoid(40) == sigmoid(50) == 1.0 in float64; the AUC must still see 50 > 40
    m = metrics.classification_metrics([1, 0], [50.0, 40.0], [0, 0])
    assert m["auc"] == 1.0
    assert m["din_pairwise_accuracy"] == 1.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same number"):
        metrics.auc([1, 0], [0.1])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.auc([2, 0], [0.1, 0.2])
