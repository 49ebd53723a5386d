"""benchmarks/fidelity.py: its claims file, the late gain and the verdicts, against scipy's own Welch test."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ito_sweeps.sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
fidelity = sys.modules["fidelity"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)


def test_the_fidelity_space_is_the_default_budget_with_the_claims_rows(tmp_path):
    claims = fidelity.load_claims()
    space = load_space(fidelity.write_space(claims, tmp_path))
    default = load_space(fidelity.DEFAULT_SPACE, "cpu")
    assert space.name == "fidelity" and space.num_trials() == 3 * len(claims["variants"])
    configs = dict(space.known_configs())
    # every row trains on the default's data and budget: its config differs from OpenCLIP's only in the objective
    for key, value in default.resolve(default.trial_configs()[0]).flat().items():
        if not key.startswith(("objective.", "fusion.", "run.seed")):
            assert all(c.flat()[key] == value for c in configs.values()), key
    suite_metrics = {f"test/scenes/{m}" for m in ("zeroshot_top1", "probe_top1", "i2t_r1", "modality_gap")}
    assert {c["metric"] for c in claims["claims"]} <= suite_metrics | {"val/scenes/zeroshot_top1"}


def test_an_unknown_row_in_a_claim_is_refused(tmp_path):
    text = (ROOT / "benchmarks" / "fidelity.yaml").read_text().replace("b: L_con\n", "b: L_con alone\n")
    (tmp_path / "claims.yaml").write_text(text)
    with pytest.raises(ValueError, match="no variant named 'L_con alone'"):
        fidelity.load_claims(tmp_path / "claims.yaml")


def test_late_gain_is_the_last_value_minus_the_one_at_half_the_steps():
    history = pd.DataFrame({"run_id": ["r"] * 5 + ["s"] * 3, "step": [40, 20, 60, 80, 100, 10, 20, 30],
                            "value": [0.2, 0.1, 0.25, 0.3, 0.32, 0.5, 0.4, 0.45]})
    gain = fidelity.late_gain(history)
    assert gain["r"] == pytest.approx(0.32 - 0.25) and gain["s"] == pytest.approx(0.45 - 0.4)


@pytest.mark.parametrize("a_values, expect, verdict", [
    ([20.0, 21.0, 22.5], "higher", "reproduced"),
    ([20.0, 21.0, 22.5], "lower", "reversed"),
    ([14.0, 16.0, 15.5], "higher", "not significant"),
])
def test_verdict_follows_the_welch_interval(a_values, expect, verdict):
    b_values = [15.0, 14.2, 16.1]
    values = pd.Series(a_values + b_values)
    rows = pd.Series(["a"] * 3 + ["b"] * 3)
    result = fidelity.judge({"paper": "p", "claim": "c", "metric": "m", "measure": "final", "expect": expect,
                             "b": "b"}, "a", values, rows)
    welch = stats.ttest_ind(a_values, b_values, equal_var=False).confidence_interval(0.95)
    assert (result.lo, result.hi) == pytest.approx((welch.low, welch.high))
    assert result.diff == pytest.approx(np.mean(a_values) - np.mean(b_values))
    assert result.a.n == result.b.n == 3 and result.verdict == verdict


def test_claims_over_a_real_store_match_what_its_runs_logged(analysis_store):
    from analysis.load import load_runs

    claims = {"claims": [
        {"paper": "ITO", "claim": "MA above CLIP", "a": ["+ multiple alignment", "+ training-time fusion"],
         "b": "OpenCLIP", "metric": "test/scenes/zeroshot_top1", "measure": "final", "expect": "higher"},
        {"paper": "ITO", "claim": "CLIP saturates", "a": ["+ training-time fusion"], "b": "OpenCLIP",
         "metric": "val/zeroshot_avg", "measure": "late_gain", "expect": "higher"},
    ]}
    results = fidelity.evaluate(claims, load_runs(analysis_store.tracking_uri, experiment="ablation"))
    finished = [t for t in analysis_store.trials["ablation"] if t.status == "FINISHED"]

    def logged(row, value):
        return [value(t) for t in finished if t.tags["variant"] == row]

    zs = lambda t: 100 * t.test["scenes/zeroshot_top1"]  # noqa: E731 - percentage points
    gain = lambda t: t.val["zeroshot_avg"][2] - t.val["zeroshot_avg"][1]  # noqa: E731 - steps 120 and 80 of 120
    expected = [(a, zs) for a in claims["claims"][0]["a"]] + [("+ training-time fusion", gain)]
    assert len(results) == 3
    for result, (row, value) in zip(results, expected):
        a, b = logged(row, value), logged("OpenCLIP", value)
        welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        assert (result.a.row, result.a.n, result.b.n) == (row, len(a), len(b))  # the FAILED run is left out
        assert (result.a.mean, result.b.mean) == pytest.approx((np.mean(a), np.mean(b)))
        assert (result.lo, result.hi) == pytest.approx((welch.low, welch.high))
    page = fidelity.page(results, {"untestable": [{"paper": "P", "claim": "video", "why": "no video"}]},
                         {"trials": 10, "finished": 9, "date": "d", "machine": "m", "commit": "c", "wall": "w"})
    assert page.count("\n| ITO |") == 3 and "| P | video | no video |" in page
