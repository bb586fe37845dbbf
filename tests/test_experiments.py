"""The comparison report: paired t-test over seeds and the 'not significant' wording."""

from __future__ import annotations

import pytest
from scipy import stats

from dhan.experiments import paired_p_value, render_markdown


def test_paired_p_value_is_scipy_ttest_rel_over_common_seeds() -> None:
    model = {0: 0.71, 1: 0.73, 2: 0.72, 3: 0.74}
    base = {0: 0.70, 1: 0.71, 2: 0.715, 9: 0.5}  # seed 3 / 9 unpaired: ignored
    expected = stats.ttest_rel([0.71, 0.73, 0.72], [0.70, 0.71, 0.715]).pvalue
    assert paired_p_value(model, base) == pytest.approx(expected)
    assert paired_p_value({0: 0.7}, {0: 0.6}) is None
    assert paired_p_value({0: 0.7, 1: 0.8}, {0: 0.7, 1: 0.8}) == 1.0


def _row(model: str, auc: float, p: float | None) -> dict:
    return {
        "model": model,
        "test_auc_mean": auc,
        "test_auc_std": 0.001,
        "test_gauc_mean": auc,
        "test_gauc_std": 0.001,
        "test_logloss_mean": 0.5,
        "relaimpr": 0.0 if p is None else 1.0,
        "p_value": p,
        "significant": None if p is None else p < 0.05,
        "train_seconds_mean": 1.0,
    }


def test_report_says_not_significant_and_flags_the_biased_protocol() -> None:
    rep = {"baseline": "din", "data": "d", "seeds": 3, "biased": True, "alpha": 0.05}
    rep["rows"] = [_row("din", 0.70, None), _row("dhan", 0.701, 0.4)]
    md = render_markdown(rep)
    assert "**not significant** (p = 0.4)" in md
    assert "BIASED" in md
    assert "| din | 0.7000 ± 0.00100 | 0.00% |" in md
