"""The paper's comparison (Tables 2 and 4): every model times every seed, then mean ± std, RelaImpr and a test.

Runs live under ``REPORT/runs/<model>/seed<k>``; a finished run (one with ``metrics.json``) is never retrained and
an interrupted one continues from its ``last.pt``, so re-running the same ``dhan compare`` finishes an interrupted
comparison. The report gives the test metrics at the checkpoint selected on validation (unless the runs used
``--protocol paper``, which the report then flags as biased).

Significance: for each model, a two-sided paired t-test (``scipy.stats.ttest_rel``) of its test AUC against the
baseline's over the seeds both have; seed ``k`` of every model shares the data order and the initialisation seed,
which is what makes the pairing meaningful. Standard deviations are sample standard deviations (ddof=1); the
paper does not say which it reports.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dhan.checkpoint import atomic_write_text, model_config_class, read_json
from dhan.config import build_run_config
from dhan.data.store import PreparedData
from dhan.errors import UserError
from dhan.metrics import relaimpr
from dhan.train import fit

log = logging.getLogger(__name__)

ALPHA = 0.05


@dataclass
class CompareSpec:
    """What to compare and how every run is configured."""

    models: tuple[str, ...]
    seeds: int = 5
    baseline: str = "din"
    preset: str = "paper"
    file_config: Mapping[str, Any] = field(default_factory=dict)  # train/data sections for every run
    model_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-model model overrides
    set_flags: tuple[str, ...] = ()
    train_flags: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise UserError("--models is empty; list models separated by commas, e.g. din,dhan")
        if len(set(self.models)) != len(self.models):
            raise UserError(f"--models lists a model twice: {','.join(self.models)}")
        if self.baseline not in self.models:
            raise UserError(f"--baseline {self.baseline!r} is not among --models {','.join(self.models)}")
        if self.seeds < 1:
            raise UserError(f"--seeds must be >= 1; got {self.seeds}")


def run_dir(report: Path, model: str, seed: int) -> Path:
    return report / "runs" / model / f"seed{seed}"


def run_all(spec: CompareSpec, data: PreparedData, data_path: str, report: Path, progress: bool = True) -> None:
    """Train every missing (model, seed) run; finished ones are kept as they are."""
    total = len(spec.models) * spec.seeds
    k = 0
    for model in spec.models:
        for seed in range(spec.seeds):
            k += 1
            run = run_dir(report, model, seed)
            if (run / "metrics.json").is_file():
                log.info("[%d/%d] %s seed %d: finished earlier, kept", k, total, model, seed)
                continue
            log.info("[%d/%d] %s seed %d -> %s", k, total, model, seed, run)
            file_config = dict(spec.file_config)
            file_config["model"] = dict(spec.model_configs.get(model, {}))
            rc = build_run_config(
                model,
                recipe=data.schema.recipe,
                preset=spec.preset,
                file_config=file_config,
                set_flags=list(spec.set_flags),
                train_flags={**spec.train_flags, "seed": seed},
                data_flags={"path": data_path},
                model_config_class=model_config_class(model),
            )
            fit(rc, data, run, resume=True, progress=progress)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def paired_p_value(model_aucs: Mapping[int, float], base_aucs: Mapping[int, float]) -> float | None:
    """Two-sided paired t-test over the seeds both have; None with fewer than 2 pairs, 1.0 for identical runs."""
    from scipy import stats

    seeds = sorted(set(model_aucs) & set(base_aucs))
    if len(seeds) < 2:
        return None
    a = np.array([model_aucs[s] for s in seeds])
    b = np.array([base_aucs[s] for s in seeds])
    diff = a - b
    if np.allclose(diff, diff[0]):
        # constant differences: the t statistic is undefined (zero variance); identical runs are not different
        return 1.0 if diff[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def build_report(spec: CompareSpec, report: Path, data_path: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for model in spec.models:
        runs[model] = []
        for seed in range(spec.seeds):
            run = run_dir(report, model, seed)
            m = read_json(run / "metrics.json")
            runs[model].append({"seed": seed, "run_dir": str(run.relative_to(report)), **m})
    aucs = {m: {r["seed"]: r["test"]["auc"] for r in rs if r.get("test")} for m, rs in runs.items()}
    base_mean, _ = _mean_std(list(aucs[spec.baseline].values()))
    rows = []
    for model in spec.models:
        rs = runs[model]
        tests = [r.get("test") or {} for r in rs]
        auc_mean, auc_std = _mean_std([t.get("auc", float("nan")) for t in tests])
        gauc_mean, gauc_std = _mean_std([t.get("gauc", float("nan")) for t in tests])
        ll_mean, ll_std = _mean_std([t.get("logloss", float("nan")) for t in tests])
        pw_mean, _ = _mean_std([t.get("din_pairwise_accuracy", float("nan")) for t in tests])
        secs, _ = _mean_std([r.get("train_seconds", float("nan")) for r in rs])
        rate, _ = _mean_std([r.get("train_samples_per_second") or float("nan") for r in rs])
        p = None if model == spec.baseline else paired_p_value(aucs[model], aucs[spec.baseline])
        rows.append(
            {
                "model": model,
                "test_auc_mean": auc_mean,
                "test_auc_std": auc_std,
                "test_gauc_mean": gauc_mean,
                "test_gauc_std": gauc_std,
                "test_logloss_mean": ll_mean,
                "test_logloss_std": ll_std,
                "test_din_pairwise_accuracy_mean": pw_mean,
                "relaimpr": relaimpr(auc_mean, base_mean),
                "p_value": p,
                "significant": None if p is None else bool(p < ALPHA),
                "train_seconds_mean": secs,
                "train_samples_per_second_mean": rate,
                "runs": rs,
            }
        )
    protocols = sorted({str(r.get("protocol")) for rs in runs.values() for r in rs})
    return {
        "baseline": spec.baseline,
        "data": data_path,
        "seeds": spec.seeds,
        "protocol": protocols[0] if len(protocols) == 1 else protocols,
        "biased": any(r.get("selected_on") == "test" for rs in runs.values() for r in rs),
        "alpha": ALPHA,
        "rows": rows,
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def render_markdown(rep: dict[str, Any], figures: Sequence[str] = ()) -> str:
    base = rep["baseline"]
    n = rep["seeds"]
    lines = [
        f"# Comparison with {base.upper()} as baseline",
        "",
        f"Data: `{rep['data']}`. {n} seed{'s' if n != 1 else ''} per model (0..{n - 1}). "
        + (
            "**BIASED: checkpoints were selected on the test set (`--protocol paper`), as the authors' code did; "
            "these numbers overstate what a model would score on unseen data.**"
            if rep["biased"]
            else "Test metrics at the checkpoint with the best validation AUC, computed once per run."
        ),
        "",
        "Laid out like the paper's Tables 2 and 4: mean ± std (sample std) of test AUC over seeds, and RelaImpr "
        "(paper Eq. 3) of the mean AUC against the baseline's.",
        "",
        f"| Model | test AUC mean ± std | RelaImpr | test GAUC | test logloss | p vs {base} | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rep["rows"]:
        p = r["p_value"]
        p_text = "baseline" if r["model"] == base else ("n/a (1 seed)" if p is None else f"{p:.3g}")
        if r["significant"] is False:
            p_text += " (not significant)"
        lines.append(
            f"| {r['model']} | {_fmt(r['test_auc_mean'])} ± {_fmt(r['test_auc_std'], 5)} | "
            f"{_fmt(r['relaimpr'], 2)}% | {_fmt(r['test_gauc_mean'])} ± {_fmt(r['test_gauc_std'], 5)} | "
            f"{_fmt(r['test_logloss_mean'])} | {p_text} | {_fmt(r['train_seconds_mean'], 1)} |"
        )
    lines += [
        "",
        f"Significance: two-sided paired t-test of test AUC over seeds against {base} (scipy `ttest_rel`), "
        f"alpha = {rep['alpha']}.",
        "",
    ]
    for r in rep["rows"]:
        if r["model"] == base:
            continue
        diff = r["test_auc_mean"] - next(x["test_auc_mean"] for x in rep["rows"] if x["model"] == base)
        if r["p_value"] is None:
            verdict = "no test possible with one seed"
        elif r["significant"]:
            verdict = f"significant (p = {r['p_value']:.3g})"
        else:
            verdict = f"**not significant** (p = {r['p_value']:.3g}): the difference is within seed-to-seed noise"
        lines.append(f"* {r['model']} vs {base}: AUC {diff:+.4f}, RelaImpr {_fmt(r['relaimpr'], 2)}%; {verdict}.")
    lines += [
        "",
        "GAUC is the DIN paper's impression-weighted per-user AUC. The DIN/DHAN code's \"GAUC\" is a different "
        "number (fraction of same-user positive/negative pairs ranked correctly, ties wrong); it is in "
        "`report.json` as `test_din_pairwise_accuracy_mean`.",
    ]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_report(rep: dict[str, Any], report: Path, figures: Sequence[str] = ()) -> None:
    atomic_write_text(report / "report.json", json.dumps(rep, indent=2) + "\n")
    atomic_write_text(report / "report.md", render_markdown(rep, figures))


def table_text(rep: dict[str, Any]) -> str:
    """A compact plain-text table for the terminal."""
    base = rep["baseline"]
    head = f"{'model':<10} {'test AUC':>17} {'RelaImpr':>9} {'GAUC':>7} {'logloss':>8} {'p vs ' + base:>14}"
    out = [head, "-" * len(head)]
    for r in rep["rows"]:
        p = "baseline" if r["model"] == base else ("n/a" if r["p_value"] is None else f"{r['p_value']:.3g}")
        if r["significant"] is False:
            p += " (n.s.)"
        out.append(
            f"{r['model']:<10} {_fmt(r['test_auc_mean'])} ± {_fmt(r['test_auc_std'])} {_fmt(r['relaimpr'], 2):>8}% "
            f"{_fmt(r['test_gauc_mean']):>7} {_fmt(r['test_logloss_mean']):>8} {p:>14}"
        )
    if rep["biased"]:
        out.append("BIASED: checkpoints selected on the test set (--protocol paper)")
    return "\n".join(out)
