"""Tables: every cell against a pandas or hand computation, every spec mistake named, the outputs' structure.

Most tests build a run table by hand (the columns `load_runs` returns), so each number is small enough
to work out here; the end-to-end tests read the shared MLflow store (tests/analysis_store.py) through
`load_runs` and compare with what the store's trials logged.
"""
import io
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis.errors import AnalysisError
from analysis.load import load_runs
from analysis.rows import group_rows, select
from analysis import table_spec
from analysis.table_spec import SPECS_DIR, RowSpec, TableSpec, check_benchmarks, load_spec, spec_for
from analysis.tables import build_table, default_spec, welch_interval
from analysis.values import sort_key, value_key
from ito_sweeps import config
from tests.analysis_store import ABLATION_ROWS

ROOT = Path(__file__).resolve().parents[1]
ZS = "metrics.test/scenes/zeroshot_top1"
GAP = "metrics.test/scenes/modality_gap"
CPU_RESOURCES = {"tags.resources.num_workers": "1", "tags.resources.cpus_per_worker": "2",
                 "tags.resources.gpus_per_worker": "0"}


def run_table(*runs: dict) -> pd.DataFrame:
    """Runs as `load_runs` tabulates them: finished, one CPU-hour each, unless a run says otherwise."""
    records = [{"run_id": f"id{i}", "run_name": f"run {i}", "status": "FINISHED", "duration_s": 3600.0,
                **CPU_RESOURCES, **run} for i, run in enumerate(runs)]
    return pd.DataFrame.from_records(records)


def trial(variant, seed, zs=None, gap=None, **more) -> dict:
    return {"tags.variant": variant, "tags.seed": str(seed), ZS: zs, GAP: gap, **more}


def spec(**doc) -> TableSpec:
    """One zero-shot column in percent by variant, unless `doc` says otherwise."""
    return load_spec({"rows": {"by": "tags.variant"},
                      "columns": [{"metric": "test/scenes/zeroshot_top1", "name": "ZS", "scale": 100, "format": "{:.1f}"}],
                      **doc})


def cells_of(table, column: str) -> list:
    return table.cells[column].tolist()


# ---- aggregation ------------------------------------------------------------------------------------------


def test_cells_average_finished_runs_over_seeds():
    frame = run_table(
        trial("A", 0, 0.1), trial("A", 1, 0.2), trial("A", 2, 0.3),
        trial("B", 0, 0.4), trial("B", 1, 0.6),
        trial("B", 2, 0.99, status="FAILED", **{"tags.error": "NonFiniteLoss: loss became NaN"}),
        trial("B", 3, None),  # finished without the metric
        trial("B", 4, 0.98, status="RUNNING", duration_s=math.nan),
    )
    table = build_table(frame, spec())
    # A: 10, 20, 30 -> mean 20, std 10; B: 40, 60 -> mean 50, std sqrt(200); the failed 99 and running 98 never count
    assert cells_of(table, "tags.variant") == ["A", "B"]
    assert cells_of(table, "n") == [3, 3]
    assert cells_of(table, "ZS mean") == pytest.approx([20.0, 50.0])
    assert cells_of(table, "ZS std") == pytest.approx([10.0, math.sqrt(200)])
    assert cells_of(table, "ZS n") == [3, 2]
    assert table.excluded[["run_name", "status", "reason", "detail"]].values.tolist() == [
        ["run 5", "FAILED", "failed", "NonFiniteLoss: loss became NaN"],
        ["run 7", "RUNNING", "running", ""],
        ["run 6", "FINISHED", "missing metrics.test/scenes/zeroshot_top1", ""],
    ]
    markdown = table.to_markdown()
    assert "| A | 3 | 20.0 ± 10.0 |" in markdown
    assert "| B | 3 | **50.0** ± 14.1 (n=2) |" in markdown
    assert table.notes == ["excluded: 1 failed (run 5: NonFiniteLoss: loss became NaN), 1 running (run 7), "
                           "1 missing metrics.test/scenes/zeroshot_top1 (run 6)"]
    assert markdown.rstrip().endswith(table.notes[0].replace("_", "\\_"))


def test_each_proportion_cell_states_its_binomial_standard_error():
    # A: 20% and 30% of 2,000 test images -> p = 0.25, se = sqrt(0.25 * 0.75 / 2000) = 0.968 points; B: 50% of
    # 1,000 -> 1.581. A modality gap is no proportion, and runs that logged no sample count get no se.
    samples = "metrics.test/scenes/samples"
    frame = run_table(trial("A", 0, 0.2, gap=0.5, **{samples: 2000.0}), trial("A", 1, 0.3, gap=0.7, **{samples: 2000.0}),
                      trial("B", 0, 0.5, gap=0.4, **{samples: 1000.0}))
    gap = {"metric": "test/scenes/modality_gap", "name": "gap", "better": "lower"}
    table = build_table(frame, spec(columns=[{"metric": "test/scenes/zeroshot_top1", "name": "ZS", "scale": 100,
                                              "format": "{:.1f}"}, gap]))
    assert cells_of(table, "ZS binomial_se") == pytest.approx([100 * math.sqrt(0.25 * 0.75 / 2000),
                                                               100 * math.sqrt(0.25 / 1000)])
    assert all(math.isnan(v) for v in cells_of(table, "gap binomial_se"))
    markdown = table.to_markdown()
    assert "| A | 2 | 25.0 ± 7.1, se 1.0 | 0.600 ± 0.141 |" in markdown and "| B | 1 | **50.0**, se 1.6 | **0.400** |" in markdown
    unlogged = build_table(run_table(trial("A", 0, 0.2)), spec())
    assert math.isnan(unlogged.cells["ZS binomial_se"][0]) and "se" not in unlogged.to_markdown()


def test_a_single_run_shows_its_value_without_a_deviation_and_a_row_without_finished_runs_stays():
    frame = run_table(trial("A", 0, 0.25), trial("B", 0, 0.5, status="FAILED"))
    table = build_table(frame, spec())
    assert cells_of(table, "n") == [1, 0]
    assert math.isnan(table.cells["ZS std"][0])
    markdown = table.to_markdown()
    assert "| A | 1 | **25.0** |" in markdown
    assert "| B | 0 | n/a |" in markdown


def test_rows_match_values_by_meaning_and_follow_the_order():
    # tags hold text ("2.0"), params hold typed values: the spec's YAML numbers and booleans match both
    frame = run_table(*(
        {"tags.objective.fusion_weight": str(lam), "params.objective.fusion_weight": lam,
         "tags.flag": str(lam != 10.0), "tags.seed": "0", ZS: lam / 100}
        for lam in (0.0, 0.5, 2.0, 10.0)
    ))
    table = build_table(frame, spec(
        rows={"by": "tags.objective.fusion_weight", "order": [2], "names": {0.5: "half"}, "header": "λ"},
        where={"params.objective.fusion_weight": [0.5, 2, 10], "tags.flag": True},
    ))
    # 2 first as listed, then the rest in numeric (not text) order; 10 is dropped by tags.flag
    assert cells_of(table, "tags.objective.fusion_weight") == [2.0, 0.5]
    assert cells_of(table, "ZS mean") == pytest.approx([2.0, 0.5])
    lines = table.to_markdown().splitlines()
    assert lines[0] == "| λ | n | ZS |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 2", "| half"]


def test_rows_by_several_columns_with_a_baseline_and_deltas():
    frame = run_table(*(
        trial(variant, seed, zs, **{"params.objective.fusion_weight": lam})
        for variant, lam, zs in (("A", 0.0, 0.10), ("A", 2.0, 0.30), ("B", 0.0, 0.20), ("B", 2.0, 0.45))
        for seed in (0, 1)
    ))
    table = build_table(frame, spec(rows={
        "by": ["tags.variant", "params.objective.fusion_weight"], "header": ["Method", "λ"],
        "order": [["B", 2], ["A", 0]], "baseline": ["A", 0], "names": {2: "on", 0: "off"},
    }))
    assert list(zip(cells_of(table, "tags.variant"), cells_of(table, "params.objective.fusion_weight"))) == [
        ("B", 2.0), ("A", 0.0), ("A", 2.0), ("B", 0.0)]
    delta = cells_of(table, "ZS delta")
    assert math.isnan(delta[1])  # the baseline is not compared with itself
    assert [delta[0], delta[2], delta[3]] == pytest.approx([35.0, 20.0, 10.0])
    body = table.to_markdown().splitlines()[2:]
    assert body[0] == "| B | on | 2 | **45.0** ± 0.0 | +35.0 |"
    assert body[1] == "| A | off | 2 | 10.0 ± 0.0 |  |"


def test_where_keeps_runs_matching_a_value_or_a_list():
    frame = run_table(*(trial(v, 0, zs, **{"params.objective.fusion_weight": lam})
                        for v, lam, zs in (("A", 0.0, 0.1), ("A", 2.0, 0.9), ("B", 0.0, 0.2), ("C", 0.0, 0.3))))
    table = build_table(frame, spec(where={"params.objective.fusion_weight": 0, "tags.variant": ["A", "C"]}))
    assert cells_of(table, "tags.variant") == ["A", "C"]
    assert cells_of(table, "ZS mean") == pytest.approx([10.0, 30.0])


def test_best_mean_is_bold_by_direction_and_ties_are_all_bold():
    frame = run_table(trial("A", 0, 0.5, 0.30), trial("B", 0, 0.5, 0.10), trial("C", 0, 0.2, 0.20))
    table = build_table(frame, spec(columns=[
        {"metric": "test/scenes/zeroshot_top1", "name": "ZS", "format": "{:.2f}"},
        {"metric": "test/scenes/modality_gap", "name": "Gap", "format": "{:.2f}", "better": "lower"},
    ]))
    body = table.to_markdown().splitlines()[2:]
    assert body == ["| A | 1 | **0.50** | 0.30 |", "| B | 1 | **0.50** | **0.10** |", "| C | 1 | 0.20 | 0.20 |"]


def test_repeated_seeds_in_a_row_are_noted():
    frame = run_table(trial("A", 0, 0.1), trial("A", 0, 0.2), trial("A", 1, 0.3), trial("B", 0, 0.4))
    table = build_table(frame, spec())
    assert table.notes == ["repeated seeds: A has 2 runs with tags.seed = 0"]
    assert cells_of(table, "n") == [3, 1]


def test_run_tables_put_together_with_repeated_index_labels():
    frame = pd.concat([run_table(trial("A", 0, 0.1), trial("B", 0, 0.3)), run_table(trial("A", 1, 0.2))])
    table = build_table(frame, spec())
    assert cells_of(table, "n") == [2, 1]
    assert cells_of(table, "ZS mean") == pytest.approx([15.0, 30.0])


# ---- rows: selecting and grouping runs (shared with the figures) ------------------------------------------


def test_values_compare_by_meaning_and_sort_numbers_numerically():
    assert value_key("0.5") == value_key(0.5) == value_key(np.float64(0.5)) == 0.5
    assert value_key(True) == value_key("True") == "True"
    assert value_key(["sep", 2]) == value_key(("sep", "2.0")) == ("sep", 2.0)
    assert value_key(None) is value_key(math.nan) is value_key("nan") is None
    nan = math.nan
    # numbers (also as text) by value, then texts, then the rest; missing values last, in their order
    assert sorted(["10", None, "x", ("a",), "2", nan, 1.5, True], key=sort_key) == [
        1.5, "2", "10", True, "x", ("a",), None, nan]


def test_group_rows_lists_the_order_first_then_sorts_and_labels_each_value():
    lam = "tags.objective.fusion_weight"
    frame = run_table(
        *(trial(variant, seed, **{lam: weight})
          for variant, weight in (("A", "10"), ("A", "2"), ("B", "0.5"), ("B", "2.0")) for seed in (0, 1)),
        trial("C", 0, status="FAILED", **{lam: "2"}),  # any status: a table lists its failed runs
        trial(None, 0, **{lam: "2"}),  # no variant: in no row
    )
    rows = load_spec({"rows": {"by": ["tags.variant", lam], "order": [["B", 2], ["Z", 1]],
                               "names": {2: "on", "A": "method A"}},
                      "columns": [COLUMN]}).rows
    found = group_rows(frame, rows)
    # B, 2 as listed (Z, 1 names no run), then sorted with 2 before 10
    expected = [("B", 2.0), ("A", 2.0), ("A", 10.0), ("B", 0.5), ("C", 2.0)]
    assert [row.key for row in found] == expected
    assert [row.label for row in found] == ["B, on", "method A, on", "method A, 10", "B, 0.5", "C, on"]
    weight = frame[lam].astype(float)
    for row, (variant, value) in zip(found, expected):
        assert row.trials["run_id"].tolist() == frame.loc[(frame["tags.variant"] == variant) & (weight == value),
                                                          "run_id"].tolist()
    assert sum(len(row.trials) for row in found) == len(frame) - 1
    with pytest.raises(AnalysisError, match="rows.by: the runs have no column 'tags.nope'"):
        group_rows(frame, RowSpec(by=("tags.nope",)))


def test_a_run_without_a_row_value_is_left_out_of_the_table_and_said_so():
    table = build_table(run_table(trial("A", 0, 0.1), trial(None, 1, 0.9)), spec())
    assert cells_of(table, "tags.variant") == ["A"]
    assert cells_of(table, "ZS mean") == pytest.approx([10.0])
    assert table.excluded[["run_name", "status", "reason"]].values.tolist() == [
        ["run 1", "FINISHED", "no tags.variant"]]
    assert table.notes == ["excluded: 1 no tags.variant (run 1)"]


def test_a_row_spec_built_in_code_heads_its_columns_like_a_spec_does():
    assert RowSpec(by=("params.fusion.depth", "tags.variant")).header == ("fusion.depth", "variant")
    assert load_spec({"rows": {"by": "params.fusion.depth"}, "columns": [COLUMN]}).rows.header == ("fusion.depth",)
    assert RowSpec(by=("tags.variant",), header=("Method",)).header == ("Method",)


def test_select_keeps_the_runs_holding_an_accepted_value():
    frame = run_table(trial("A", 0, **{"params.x": 0.5}), trial("B", 0, **{"params.x": 2.0}),
                      trial("C", 0, **{"params.x": None}), trial("D", 0, **{"params.x": 3.0}))
    assert select(frame, {"params.x": ["0.5", 2]})["run_id"].tolist() == ["id0", "id1"]
    where = spec(where={"params.x": 2, "tags.variant": ["B", "D"]}).where
    assert select(frame, where)["run_id"].tolist() == ["id1"]
    assert select(frame, {})["run_id"].tolist() == frame["run_id"].tolist()
    with pytest.raises(AnalysisError, match="where.params.y: the runs have no column 'params.y'"):
        select(frame, {"params.y": [1]})
    with pytest.raises(AnalysisError, match=r"where.params.x: no run has 7 \(values there: 0.5, 2, 3\)"):
        select(frame, {"params.x": [7]})


# ---- significance -----------------------------------------------------------------------------------------


def test_welch_interval_matches_scipy():
    a, b = np.array([0.31, 0.35, 0.29, 0.40]), np.array([0.20, 0.26, 0.21])
    lo, hi = welch_interval(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((expected.low, expected.high))


def test_welch_interval_hand_worked():
    # a = [1, 3]: mean 2, s^2 = 2, s^2/n = 1; b = [0, 0, 0]: s = 0. se = 1, df = 1^2 / (1^2 / 1) = 1, and
    # t with 1 df is Cauchy: its 97.5% quantile is tan(0.475 pi)
    lo, hi = welch_interval(2.0, math.sqrt(2), 2, 0.0, 0.0, 3)
    assert (lo, hi) == pytest.approx((2 - math.tan(0.475 * math.pi), 2 + math.tan(0.475 * math.pi)))
    # identical repeats on both sides: no spread, the interval is the difference itself
    assert welch_interval(2.0, 0.0, 3, 1.0, 0.0, 3) == pytest.approx((1.0, 1.0))
    # elementwise over rows: 3 runs a side with s = 1 give se^2 = 2/3 and df = (2/3)^2 / (2 (1/3)^2 / 2) = 4,
    # whose 97.5% t quantile is 2.7764451 (any t table); one run on a side: undefined
    lo, hi = welch_interval([2.0, 2.0], [1.0, math.nan], [3, 1], 1.0, 1.0, 3)
    assert (lo[0], hi[0]) == pytest.approx((1 - 2.7764451 * math.sqrt(2 / 3), 1 + 2.7764451 * math.sqrt(2 / 3)))
    assert math.isnan(lo[1]) and math.isnan(hi[1])
    assert all(math.isnan(x) for x in welch_interval(2.0, 1.0, 3, 1.0, math.nan, 1))


def test_significance_shows_the_interval_or_says_it_is_undefined():
    base, better = [0.20, 0.26, 0.21], [0.31, 0.35, 0.29, 0.40]
    frame = run_table(*(trial("base", s, v) for s, v in enumerate(base)),
                      *(trial("new", s, v) for s, v in enumerate(better)), trial("single", 0, 0.5))
    table = build_table(frame, spec(rows={"by": "tags.variant", "baseline": "base"}, significance=True))
    expected = stats.ttest_ind(np.array(better) * 100, np.array(base) * 100, equal_var=False).confidence_interval()
    new = table.cells.set_index("tags.variant").loc["new"]
    assert (new["ZS lo"], new["ZS hi"]) == pytest.approx((expected.low, expected.high))
    delta = 100 * (np.mean(better) - np.mean(base))
    body = table.to_markdown().splitlines()[2:]
    assert body[1].endswith(f"| +{delta:.1f} [{expected.low:.1f}, {expected.high:.1f}] |")
    assert body[2].endswith(f"| +{100 * 0.5 - 100 * np.mean(base):.1f} [n/a] |")


# ---- cost -------------------------------------------------------------------------------------------------


def test_cost_is_cpu_hours_without_gpus_and_gpu_hours_with_them():
    cpu = run_table(trial("A", 0, 0.1, duration_s=3600.0), trial("A", 1, 0.1, duration_s=7200.0),
                    trial("B", 0, 0.1, duration_s=1800.0, **{"tags.resources.cpus_per_worker": "4"}))
    table = build_table(cpu, spec(cost=True))
    # 1 worker x 2 CPUs x (1 h, 2 h) -> mean 3; 1 worker x 4 CPUs x 0.5 h -> 2
    assert table.cost_column == "CPU-hours"
    assert cells_of(table, "CPU-hours") == pytest.approx([3.0, 2.0])
    gpu = {"tags.resources.num_workers": "8", "tags.resources.gpus_per_worker": "1",
           "tags.resources.cpus_per_worker": "8"}
    table = build_table(run_table(trial("A", 0, 0.1, duration_s=5400.0, **gpu), trial("B", 0, 0.1)), spec(cost=True))
    # 8 workers x 1 GPU x 1.5 h; the CPU-only row used no GPU
    assert table.cost_column == "GPU-hours"
    assert cells_of(table, "GPU-hours") == pytest.approx([12.0, 0.0])
    assert table.to_markdown().splitlines()[0].endswith("| GPU-hours |")


# ---- output formats ---------------------------------------------------------------------------------------

SPECIAL = "50% a_b & c#{x}~^\\$|"
UNESCAPED_AMPERSAND = re.compile(r"(?<!\\)&")


def special_table():
    frame = run_table(trial(SPECIAL, 0, 0.9, 0.1), trial(SPECIAL, 1, 0.8, 0.2), trial("plain", 0, 0.5, 0.05),
                      trial("plain", 1, 0.4, None))
    return build_table(frame, spec(
        title="Ablation: 100% of λ",
        rows={"by": "tags.variant", "baseline": "plain"},
        columns=[{"metric": "test/scenes/zeroshot_top1", "name": "Top_1 (%)", "scale": 100, "format": "{:.1f}"},
                 {"metric": "test/scenes/modality_gap", "name": "Gap", "better": "lower"}],
        significance=True, cost=True,
    ))


def test_latex_is_a_booktabs_tabular_with_escaped_text():
    table = special_table()
    lines = table.to_latex().splitlines()
    assert lines[0] == "% Ablation: 100% of λ"
    body = lines[lines.index("\\midrule") + 1: lines.index("\\bottomrule")]
    assert lines[1] == "\\begin{tabular}{l" + "r" * 6 + "}"
    assert lines[2] == "\\toprule" and lines[-2] == "\\end{tabular}" and lines[-3] == "\\bottomrule"
    header = lines[3]
    assert header == r"variant & n & Top\_1 (\%) & $\Delta$ & Gap & $\Delta$ & CPU-hours \\"
    rows = [header, *body]
    assert len(body) == 2 and all(row.endswith(r" \\") for row in rows)
    assert {len(UNESCAPED_AMPERSAND.split(row)) for row in rows} == {7}
    escaped = r"50\% a\_b \& c\#\{x\}\textasciitilde{}\textasciicircum{}\textbackslash{}\$|"
    assert body[0].startswith(escaped + " & 2 & \\textbf{85.0} $\\pm$ 7.1 & +40.0 [")
    assert body[1].startswith("plain & 2 & 45.0 $\\pm$ 7.1 &  & \\textbf{0.050} (n=1) &  & ")
    assert lines[-1] == "% excluded: 1 missing metrics.test/scenes/modality_gap (run 3)"


def test_markdown_escapes_pipes_and_keeps_one_cell_per_column():
    table = special_table()
    lines = table.to_markdown().splitlines()
    assert lines[:2] == ["**Ablation: 100% of λ**", ""]
    header, separator, *body = lines[2:6]
    assert header == "| variant | n | Top\\_1 (%) | Δ | Gap | Δ | CPU-hours |"
    assert separator == "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"
    unescaped_pipe = re.compile(r"(?<!\\)\|")
    assert {len(unescaped_pipe.findall(line)) for line in (header, separator, *body)} == {8}
    assert body[0].startswith("| 50% a\\_b & c#{x}~^\\\\$\\| | 2 | **85.0** ± 7.1 | +40.0 [")


def test_csv_holds_the_cells_in_display_units():
    table = special_table()
    back = pd.read_csv(io.StringIO(table.to_csv()))
    assert list(back.columns) == ["tags.variant", "n",
                                  *(f"Top_1 (%) {p}" for p in ("mean", "std", "n", "binomial_se", "delta", "lo", "hi")),
                                  *(f"Gap {p}" for p in ("mean", "std", "n", "binomial_se", "delta", "lo", "hi")), "CPU-hours"]
    pd.testing.assert_frame_equal(back, table.cells, check_dtype=False)
    assert back["Top_1 (%) mean"].tolist() == pytest.approx([85.0, 45.0])


# ---- spec mistakes ----------------------------------------------------------------------------------------

COLUMN = {"metric": "test/scenes/zeroshot_top1"}


@pytest.mark.parametrize("doc, expected", [
    ({"rows": {"by": "tags.variant"}, "columns": [COLUMN], "colour": "red"},
     ["colour: unknown key", "valid keys: title, where, rows, seeds, columns, significance, cost"]),
    ({"rows": {"by": "tags.variant", "sort": "up"}, "columns": [COLUMN]},
     ["rows.sort: unknown key", "valid keys: by, header, order, names, baseline"]),
    ({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "colour": "red"}]},
     ["columns[0].colour: unknown key", "valid keys: metric, name, source, scale, format, better"]),
    ({"columns": [COLUMN]}, ["rows: missing"]),
    ({"rows": {}, "columns": [COLUMN]}, ["rows.by: missing"]),
    ({"rows": {"by": []}, "columns": [COLUMN]}, ["rows.by: empty", "tags.variant"]),
    ({"rows": {"by": "tags.variant"}, "columns": []}, ["columns: empty"]),
    ({"rows": {"by": "tags.variant"}, "columns": [COLUMN], "significance": True},
     ["significance: true needs rows.baseline"]),
    ({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "better": "up"}]},
     ["columns[0].better", "'up' is not one of higher | lower"]),
    ({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "source": "max"}]},
     ["columns[0].source", "final | best"]),
    ({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "format": "{:.1q}"}]},
     ["columns[0].format", "cannot format a number"]),
    ({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "scale": "100"}]}, ["columns[0].scale", "a number"]),
    ({"rows": {"by": "tags.variant"}, "columns": [COLUMN, COLUMN]},
     ["columns[1].name", "already the name of columns[0]"]),
    ({"rows": {"by": ["tags.variant", "params.fusion.depth"], "header": "Method"}, "columns": [COLUMN]},
     ["rows.header", "1 headers for 2 rows.by columns"]),
    ({"rows": {"by": ["tags.variant", "params.fusion.depth"], "baseline": "CLIP"}, "columns": [COLUMN]},
     ["rows.baseline", "a list of 2 values, one per rows.by column (tags.variant, params.fusion.depth)"]),
    ({"rows": {"by": ["tags.variant", "params.fusion.depth"], "order": [["CLIP", 2], "ITO"]}, "columns": [COLUMN]},
     ["rows.order[1]", "a list of 2 values"]),
    ({"rows": {"by": "tags.variant"}, "columns": [COLUMN], "cost": "yes"}, ["cost", "true or false"]),
])
def test_spec_mistakes_name_the_key_and_what_is_valid(doc, expected):
    with pytest.raises(AnalysisError) as err:
        load_spec(doc)
    for text in expected:
        assert text in str(err.value)


FRAME = run_table(trial("A", 0, 0.1), trial("B", 0, 0.2))


@pytest.mark.parametrize("doc, expected", [
    ({"rows": {"by": "tags.variant", "baseline": "Z"}},
     ["rows.baseline: Z matches no row (rows: A; B)"]),
    ({"rows": {"by": "tags.varaint"}}, ["rows.by", "no column 'tags.varaint'", "did you mean tags.variant"]),
    ({"where": {"tags.nope": 1}}, ["where.tags.nope", "no column 'tags.nope'"]),
    ({"where": {"tags.variant": ["C", "D"]}}, ["where.tags.variant: no run has C or D (values there: A, B)"]),
    ({"columns": [{"metric": "test/scenes/zeroshot_top2"}]},
     ["columns[0].metric", "no column 'metrics.test/scenes/zeroshot_top2'", "metrics.test/scenes/zeroshot_top1"]),
    ({"columns": [{"metric": "test/scenes/zeroshot_top1", "source": "best"}]}, ["columns[0].metric: source best needs"]),
    ({"seeds": "tags.repeat"}, ["seeds", "no column 'tags.repeat'"]),
])
def test_specs_that_do_not_fit_the_runs_name_the_key(doc, expected):
    with pytest.raises(AnalysisError) as err:
        build_table(FRAME, spec(**doc))
    for text in expected:
        assert text in str(err.value)


def test_cost_needs_the_resource_tags():
    with pytest.raises(AnalysisError, match="cost: the runs have no column 'tags.resources.num_workers'"):
        build_table(FRAME.drop(columns=list(CPU_RESOURCES)), spec(cost=True))


def test_spec_files_that_cannot_be_read(tmp_path):
    with pytest.raises(AnalysisError, match="cannot read the table spec"):
        load_spec(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("rows: [by\n")
    with pytest.raises(AnalysisError, match="bad.yaml: not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- rows\n")
    with pytest.raises(AnalysisError, match="list.yaml: expected a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_spec_files_with_a_key_written_twice_are_refused_naming_both_lines(tmp_path):
    # YAML itself would keep the second title, or the second metric, without a word
    top = tmp_path / "top.yaml"
    top.write_text("title: A\nrows: {by: tags.variant}\ntitle: B\ncolumns: [{metric: test/scenes/zeroshot_top1}]\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("rows:\n  by: tags.variant\ncolumns:\n  - metric: test/scenes/zeroshot_top1\n"
                      "  - metric: test/scenes/probe_top1\n    name: Probe\n    metric: test/scenes/i2t_r1\n")
    for path, expected in ((top, "title: written twice (lines 1 and 3)"),
                           (nested, "columns[1].metric: written twice (lines 5 and 7)")):
        with pytest.raises(AnalysisError) as err:
            load_spec(path)
        assert str(err.value).startswith(f"{path}: {expected}; YAML would silently keep the last one")


@pytest.mark.parametrize("written, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
def test_a_scale_that_is_not_a_finite_number_is_refused(tmp_path, written, shown):
    path = tmp_path / "spec.yaml"
    path.write_text("rows: {by: tags.variant}\ncolumns:\n  - metric: test/scenes/zeroshot_top1\n"
                    f"  - metric: test/scenes/probe_top1\n    scale: {written}\n")
    with pytest.raises(AnalysisError) as err:
        load_spec(path)
    assert str(err.value) == f"{path}: columns[1].scale: {shown} is not a finite number"
    with pytest.raises(AnalysisError, match=f"table spec: columns\\[0\\].scale: {shown} is not a finite number"):
        load_spec({"rows": {"by": "tags.variant"}, "columns": [{**COLUMN, "scale": float(shown)}]})


# ---- shipped and default specs ----------------------------------------------------------------------------


def space(name: str) -> dict:
    return yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())


def variant_names(name: str) -> list[str]:
    return [v["name"] for v in space(name)["variants"]]


def test_shipped_specs_name_the_rows_their_search_spaces_make():
    twins = ["ablation_components", "alignment_variants", "fusion_depth", "fusion_weight", "latent_structure",
             "patch_dropout", "smoke"]  # every spec has a gpu twin: the same rows over the gpu profile's benchmarks
    assert sorted(p.name for p in SPECS_DIR.glob("*.yaml")) == sorted(
        f"{name}{suffix}" for name in twins for suffix in (".yaml", ".gpu.yaml"))
    for name in twins:
        cpu, gpu = load_spec(SPECS_DIR / f"{name}.yaml"), load_spec(SPECS_DIR / f"{name}.gpu.yaml")
        assert (gpu.rows, gpu.where, gpu.title, gpu.significance, gpu.cost) == (
            cpu.rows, cpu.where, cpu.title, cpu.significance, cpu.cost), name
    for name in ("ablation_components", "smoke", "patch_dropout"):
        shipped = spec_for(f"/anywhere/search_spaces/{name}.yaml")
        assert shipped.rows.by == ("tags.variant",) and list(shipped.rows.order) == variant_names(name)
    for name, baseline in (("ablation_components", "OpenCLIP"), ("smoke", "CLIP"), ("patch_dropout", "ITO (exact)")):
        assert spec_for(name).rows.baseline == baseline
    for name, key in (("fusion_weight", "objective.fusion_weight"), ("fusion_depth", "fusion.depth")):
        shipped = spec_for(name)
        assert shipped.rows.by == (f"params.{key}",)
        assert list(shipped.rows.order) == space(name)["params"][key]["grid"]
    variants = spec_for("alignment_variants")
    lambdas = space("alignment_variants")["params"]["objective.fusion_weight"]["grid"]
    assert list(variants.rows.order) == [[v, lam] for v in variant_names("alignment_variants") for lam in lambdas]
    latent = load_spec(SPECS_DIR / "latent_structure.yaml")
    assert set(latent.where["tags.variant"]) == {"CLIP", "CyCLIP", "Sep", "Br", "GC"}
    assert set(latent.where["tags.variant"]) <= set(variant_names("alignment_variants"))
    assert [c.metric for c in latent.columns] == ["test/scenes/zeroshot_top1", "test/scenes/probe_top1"]
    assert spec_for("fusion_weight_optuna") is None


def test_shipped_specs_show_metrics_their_suites_report():
    """Every column of a spec for the default suite is a metric a default-config run reports at its test pass;
    the gpu specs' columns are what a suite of ImageNet-1k, COCO, CIFAR-10 and CIFAR-100 reports."""
    default = config.load(None, [])
    reported = {f"test/{m}" for m in default.eval.metric_names("test")}
    for path in SPECS_DIR.glob("*.yaml"):
        if not path.name.endswith(".gpu.yaml"):
            assert {c.metric for c in load_spec(path).columns} <= reported, path.name
    gpu_suite = config.from_dict({"eval": {"benchmarks": [
        {"name": "imagenet1k", "path": "/data/wds_imagenet1k/test", "train_path": "/data/wds_imagenet1k/train",
         "tasks": ["zeroshot_classification", "linear_probe"]},
        {"name": "mscoco", "path": "/data/wds_mscoco/test", "tasks": ["zeroshot_retrieval"]},
        {"name": "cifar10", "path": "/data/wds_cifar10/test"},
        {"name": "cifar100", "path": "/data/wds_cifar100/test"},
    ]}}).eval
    gpu = load_spec(SPECS_DIR / "ablation_components.gpu.yaml")
    assert [c.metric for c in gpu.columns] == [
        "test/imagenet1k/zeroshot_top1", "test/imagenet1k/probe_top1", "test/mscoco/i2t_r1", "test/mscoco/t2i_r1",
        "test/zeroshot_avg"]
    gpu_reported = {f"test/{m}" for m in gpu_suite.metric_names("test")}
    for path in SPECS_DIR.glob("*.gpu.yaml"):
        assert {c.metric for c in load_spec(path).columns} <= gpu_reported, path.name
    # the layout of the paper's component ablation, on each profile's benchmarks
    # (the cpu one adds the embedded suite's modality gap and digits transfer)
    cpu = spec_for("ablation_components", "cpu")
    assert [c.metric for c in cpu.columns] == [
        "test/scenes/zeroshot_top1", "test/scenes/probe_top1", "test/scenes/i2t_r1", "test/scenes/t2i_r1",
        "test/scenes/modality_gap", "test/digits/zeroshot_top1", "test/digits/probe_top1", "test/zeroshot_avg"]
    assert gpu.rows == cpu.rows and (gpu.significance, gpu.cost) == (cpu.significance, cpu.cost) == (True, True)
    smoke = [c.metric for c in spec_for("smoke").columns]
    assert smoke[:5] == [f"test/scenes/{m}" for m in ("zeroshot_top1", "probe_top1", "i2t_r1", "t2i_r1", "modality_gap")]
    assert set(smoke[5:]) == {"test/digits/zeroshot_top1", "test/digits/probe_top1", "test/zeroshot_avg"}


def test_spec_for_prefers_the_profiles_own_spec(tmp_path, monkeypatch):
    monkeypatch.setattr(table_spec, "SPECS_DIR", tmp_path)
    for name, metric in (("abl.yaml", "test/scenes/zeroshot_top1"), ("abl.gpu.yaml", "test/imagenet1k/zeroshot_top1"),
                         ("only.gpu.yaml", "test/mscoco/i2t_r1")):
        (tmp_path / name).write_text(f"rows: {{by: tags.variant}}\ncolumns: [{{metric: {metric}}}]\n")
    found = {(space, profile): spec_for(space, profile) for space, profile in (
        ("/spaces/abl.yaml", "gpu"), ("abl", "cpu"), ("abl", None), ("only", "gpu"), ("only", "cpu"), ("only", None),
        ("none", "gpu"))}
    assert {key: spec and (Path(spec.origin).name, spec.columns[0].metric) for key, spec in found.items()} == {
        ("/spaces/abl.yaml", "gpu"): ("abl.gpu.yaml", "test/imagenet1k/zeroshot_top1"),
        ("abl", "cpu"): ("abl.yaml", "test/scenes/zeroshot_top1"),
        ("abl", None): ("abl.yaml", "test/scenes/zeroshot_top1"),
        ("only", "gpu"): ("only.gpu.yaml", "test/mscoco/i2t_r1"),
        ("only", "cpu"): None, ("only", None): None, ("none", "gpu"): None}
    monkeypatch.undo()
    # the shipped ones: each space's gpu profile has its own file, its cpu profile the plain one
    for name in ("ablation_components", "smoke", "fusion_weight"):
        assert Path(spec_for(name, "gpu").origin) == SPECS_DIR / f"{name}.gpu.yaml"
        assert Path(spec_for(name, "cpu").origin) == Path(spec_for(name).origin) == SPECS_DIR / f"{name}.yaml"


# ---- columns naming benchmarks the runs do not evaluate ---------------------------------------------------

SUITE = ["scenes", "scenes_count", "digits"]


def test_a_column_naming_a_benchmark_outside_the_suite_is_refused_with_its_key():
    doc = {"rows": {"by": "tags.variant"}, "columns": [
        {"metric": "test/scenes/zeroshot_top1"}, {"metric": "test/zeroshot_avg"}, {"metric": "test/mscoco/i2t_r1"}]}
    with pytest.raises(AnalysisError) as err:
        check_benchmarks(load_spec(doc), SUITE, "specs/abl.yaml")
    assert str(err.value) == ("specs/abl.yaml: columns[2].metric: 'test/mscoco/i2t_r1' names benchmark 'mscoco', "
                              "which these runs do not evaluate (their benchmarks: scenes, scenes_count, digits)")
    # without `where` the spec's own origin is named; a set of names is listed sorted; val/ metrics count too
    val = load_spec({"rows": {"by": "tags.variant"}, "columns": [{"metric": "val/digits/probe_top1"}]})
    with pytest.raises(AnalysisError) as err:
        check_benchmarks(val, {"scenes_count", "scenes"})
    assert str(err.value) == ("table spec: columns[0].metric: 'val/digits/probe_top1' names benchmark 'digits', "
                              "which these runs do not evaluate (their benchmarks: scenes, scenes_count)")
    with pytest.raises(AnalysisError, match=r"\(their benchmarks: none\)"):
        check_benchmarks(val, [])


def test_run_level_metrics_and_suite_benchmarks_pass_the_check():
    doc = {"rows": {"by": "tags.variant"}, "columns": [
        {"metric": m} for m in ("test/scenes/zeroshot_top1", "val/scenes_count/zeroshot_top1", "test/digits/probe_top1",
                                "test/zeroshot_avg", "test/steps", "val/zeroshot_avg", "train/loss")]}
    assert check_benchmarks(load_spec(doc), SUITE) is None
    for path in SPECS_DIR.glob("*.yaml"):  # the shipped specs fit the suites they were written for
        suite = ["imagenet1k", "mscoco", "cifar10", "cifar100"] if path.name.endswith(".gpu.yaml") else SUITE
        check_benchmarks(load_spec(path), suite)


def test_build_table_checks_columns_against_the_runs_benchmarks_tags(tmp_path):
    tagged = run_table(trial("A", 0, 0.1, **{"tags.benchmarks": "scenes,scenes_count"}),
                       trial("B", 0, 0.2, **{"tags.benchmarks": "scenes,digits"}),
                       trial("C", 0, 0.3, **{"tags.benchmarks": None}))
    digits = {"metric": "test/digits/zeroshot_top1", "name": "Digits"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"rows": {"by": "tags.variant"}, "columns": [COLUMN, digits,
                                                                                {"metric": "test/mscoco/i2t_r1"}]}))
    with pytest.raises(AnalysisError) as err:
        build_table(tagged, load_spec(path))
    # the union of the runs' suites, in the order they list them
    assert str(err.value) == (f"{path}: columns[2].metric: 'test/mscoco/i2t_r1' names benchmark 'mscoco', which "
                              f"these runs do not evaluate (their benchmarks: scenes, scenes_count, digits)")
    # a benchmark one of the suites has passes; runs without the metric are left out as usual
    table = build_table(tagged.assign(**{"metrics.test/digits/zeroshot_top1": [None, 0.5, None]}),
                        spec(columns=[COLUMN, digits]))
    assert cells_of(table, "Digits n") == [0, 1, 0]
    # runs recorded before suites existed carry no tag: nothing to check against, the column is looked up
    with pytest.raises(AnalysisError, match="the runs have no column 'metrics.test/mscoco/i2t_r1'"):
        build_table(tagged.drop(columns=["tags.benchmarks"]), spec(columns=[{"metric": "test/mscoco/i2t_r1"}]))


# ---- the default spec -------------------------------------------------------------------------------------


def suite_run(variant, seed, values: dict, benchmarks="scenes,scenes_count,digits") -> dict:
    return {"tags.variant": variant, "tags.seed": str(seed), "tags.benchmarks": benchmarks,
            **{f"metrics.test/{k}": v for k, v in values.items()}}


def test_default_spec_columns_come_from_what_the_runs_logged():
    logged = {"digits/zeroshot_top1": 0.2, "digits/probe_top1": 0.6, "scenes/i2t_r1": 0.3, "scenes/probe_top1": 0.7,
              "scenes/t2i_r1": 0.35, "scenes/zeroshot_top1": 0.4, "scenes/modality_gap": 0.8,
              "scenes/uniformity_image": -1.0, "scenes_count/zeroshot_top1": 0.5, "zeroshot_avg": 0.3, "steps": 80}
    frame = run_table(suite_run("A", 0, logged), suite_run("B", 0, {k: v / 2 for k, v in logged.items()}))
    made = default_spec(frame)
    # benchmarks in suite order (the tag's), not in the column order (digits first here)
    assert [(c.name, c.metric, c.scale, c.better) for c in made.columns] == [
        ("scenes ZS", "test/scenes/zeroshot_top1", 100, "higher"),
        ("scenes probe", "test/scenes/probe_top1", 100, "higher"),
        ("scenes I→T R@1", "test/scenes/i2t_r1", 100, "higher"),
        ("scenes T→I R@1", "test/scenes/t2i_r1", 100, "higher"),
        ("scenes_count ZS", "test/scenes_count/zeroshot_top1", 100, "higher"),
        ("digits ZS", "test/digits/zeroshot_top1", 100, "higher"),
        ("digits probe", "test/digits/probe_top1", 100, "higher"),
        ("ZS avg", "test/zeroshot_avg", 100, "higher"),
        ("scenes modality gap", "test/scenes/modality_gap", 1, "lower")]
    assert made.rows.by == ("tags.variant",) and made.cost
    table = build_table(frame, made)
    assert cells_of(table, "digits probe mean") == pytest.approx([60.0, 30.0])
    assert cells_of(table, "scenes modality gap mean") == pytest.approx([0.8, 0.4])


def test_default_spec_takes_the_gap_of_the_first_retrieval_benchmark():
    # a suite whose first benchmark is classification only; two retrieval benchmarks, the first one listed wins
    values = {"imagenet1k/zeroshot_top1": 0.5, "mscoco/i2t_r1": 0.3, "mscoco/modality_gap": 0.7,
              "flickr/t2i_r1": 0.2, "flickr/modality_gap": 0.6}
    frame = run_table(suite_run("A", 0, values, "imagenet1k,mscoco,flickr"))
    assert [c.name for c in default_spec(frame).columns] == [
        "imagenet1k ZS", "mscoco I→T R@1", "flickr T→I R@1", "mscoco modality gap"]
    # without the tag (older runs): benchmarks in the order of the logged columns
    untagged = run_table({"tags.variant": "A", **{f"metrics.test/{k}": v for k, v in values.items()}})
    assert [c.name for c in default_spec(untagged).columns] == [
        "imagenet1k ZS", "mscoco I→T R@1", "flickr T→I R@1", "mscoco modality gap"]
    untagged = untagged[["run_id", "run_name", "status", "tags.variant", "metrics.test/flickr/modality_gap",
                         "metrics.test/mscoco/modality_gap", "metrics.test/mscoco/i2t_r1"]]
    assert [c.name for c in default_spec(untagged).columns] == ["mscoco I→T R@1", "flickr modality gap"]


def test_default_spec_rows_by_swept_config_tags_without_a_variant():
    frame = run_table(*({"tags.objective.fusion_weight": str(lam), "tags.fusion.depth": "2", "tags.run.seed": str(s),
                         "tags.ray.trial_id": f"t{lam}{s}", ZS: 0.1} for lam in (0.0, 2.0) for s in (0, 1)))
    assert default_spec(frame).rows.by == ("tags.objective.fusion_weight",)
    with pytest.raises(AnalysisError, match="these runs logged no test/BENCHMARK/METRIC of zeroshot_top1"):
        default_spec(frame.drop(columns=[ZS]).assign(**{"metrics.test/steps": 80, "metrics.val/scenes/i2t_r1": 0.1}))


def test_a_thousand_runs_build_well_under_a_second():
    rng = np.random.default_rng(0)
    variants = rng.choice(["A", "B", "C", "D"], 1000)
    frame = run_table(*(trial(v, i % 10, rng.uniform(), rng.uniform(),
                              status="FAILED" if i % 17 == 0 else "FINISHED",
                              **{f"params.p{k}": float(k) for k in range(100)})
                        for i, v in enumerate(variants)))
    table_spec = spec(rows={"by": "tags.variant", "baseline": "A"}, significance=True, cost=True, columns=[
        {"metric": "test/scenes/zeroshot_top1"}, {"metric": "test/scenes/modality_gap", "better": "lower"}])
    start = time.perf_counter()
    table = build_table(frame, table_spec)
    assert time.perf_counter() - start < 0.5
    finished = frame[frame["status"] == "FINISHED"]
    assert cells_of(table, "test/scenes/modality_gap mean") == pytest.approx(
        finished.groupby("tags.variant")[GAP].mean().loc[["A", "B", "C", "D"]].tolist())


# ---- end to end: a real MLflow store ----------------------------------------------------------------------


def logged(analysis_store, sweep: str) -> pd.DataFrame:
    """What the store's trials logged, one row per trial, straight from the fixture's records."""
    return pd.DataFrame([{"name": t.name, "status": t.status, "duration_s": t.duration_s, **t.tags,
                          **{f"test/{k}": v for k, v in t.test.items()}, "best_zs": max(t.val["zeroshot_avg"])}
                         for t in analysis_store.trials[sweep]])


def test_ablation_spec_over_a_real_store(analysis_store):
    runs = load_runs(analysis_store.tracking_uri, experiment="ablation")
    table = build_table(runs, spec_for("/spaces/ablation_components.yaml"))
    trials = logged(analysis_store, "ablation")
    finished = trials[trials["status"] == "FINISHED"]
    assert cells_of(table, "tags.variant") == list(ABLATION_ROWS)
    assert cells_of(table, "n") == finished.groupby("variant").size().loc[list(ABLATION_ROWS)].tolist()
    for name, metric in (("Zero-shot", "test/scenes/zeroshot_top1"), ("Linear probe", "test/scenes/probe_top1"),
                         ("I→T R@1", "test/scenes/i2t_r1"), ("T→I R@1", "test/scenes/t2i_r1"),
                         ("Zero-shot avg", "test/zeroshot_avg")):
        expected = (finished[metric] * 100).groupby(finished["variant"]).agg(["mean", "std", "count"])
        expected = expected.loc[list(ABLATION_ROWS)]
        assert cells_of(table, f"{name} mean") == pytest.approx(expected["mean"].tolist())
        assert cells_of(table, f"{name} std") == pytest.approx(expected["std"].tolist())
        assert cells_of(table, f"{name} n") == expected["count"].tolist()
        base = expected.loc["OpenCLIP", "mean"]
        assert cells_of(table, f"{name} delta")[1:] == pytest.approx((expected["mean"] - base).tolist()[1:])
        for row in ABLATION_ROWS[1:]:
            values = finished.loc[finished["variant"] == row, metric] * 100
            baseline = finished.loc[finished["variant"] == "OpenCLIP", metric].dropna() * 100
            interval = stats.ttest_ind(values, baseline, equal_var=False).confidence_interval()
            cell = table.cells.set_index("tags.variant").loc[row]
            assert (cell[f"{name} lo"], cell[f"{name} hi"]) == pytest.approx((interval.low, interval.high))
    hours = finished["duration_s"] / 3600 * 2.0  # one worker of two CPUs
    assert table.cost_column == "CPU-hours"
    assert cells_of(table, "CPU-hours") == pytest.approx(hours.groupby(finished["variant"]).mean()
                                                        .loc[list(ABLATION_ROWS)].tolist())
    failed = trials[trials["status"] == "FAILED"].iloc[0]
    missing = finished[finished["test/scenes/probe_top1"].isna()].iloc[0]
    assert table.excluded[["run_name", "reason", "detail"]].values.tolist() == [
        [failed["name"], "failed", failed["error"]], [missing["name"], "missing metrics.test/scenes/probe_top1", ""]]
    probe = finished.loc[finished["variant"] == "OpenCLIP", "test/scenes/probe_top1"] * 100
    openclip = next(line for line in table.to_markdown().splitlines() if line.startswith("| OpenCLIP |"))
    assert f"| {probe.mean():.1f} ± {probe.std():.1f} (n=2) |" in openclip
    assert f"1 failed ({failed['name']}: {failed['error']})" in table.notes[0]


def test_lambda_spec_and_best_values_over_a_real_store(analysis_store):
    runs = load_runs(analysis_store.tracking_uri, experiment="lambda")
    trials = logged(analysis_store, "lambda")
    lam = trials["objective.fusion_weight"].astype(float)
    table = build_table(runs, spec_for("fusion_weight"))
    assert cells_of(table, "params.objective.fusion_weight") == [0.0, 2.0, 6.0]
    expected = trials["test/scenes/modality_gap"].groupby(lam).agg(["mean", "std", "count"])
    assert cells_of(table, "Modality gap mean") == pytest.approx(expected["mean"].tolist())
    assert cells_of(table, "Modality gap std") == pytest.approx(expected["std"].tolist())
    # two workers of one GPU each
    assert cells_of(table, "GPU-hours") == pytest.approx((trials["duration_s"] / 3600 * 2).groupby(lam).mean().tolist())
    assert table.to_markdown().splitlines()[4].startswith("| 0 (no fusion) | 2 | ")

    best = build_table(runs, spec(rows={"by": "params.objective.fusion_weight"},
                                  columns=[{"metric": "val/zeroshot_avg", "source": "best"}]))
    assert cells_of(best, "val/zeroshot_avg mean") == pytest.approx(trials["best_zs"].groupby(lam).mean().tolist())
