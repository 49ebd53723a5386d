"""`ito-sweeps report`: tables, plots and index.md from a real MLflow store, logged back to the sweep."""
import shutil

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.load import load_runs
from analysis.table_spec import load_spec
from analysis.tables import build_table
from ito_sweeps.cli import main

SPECS = "analysis/specs"
PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"


def test_report_of_a_sweep_with_a_shipped_spec(analysis_store, tmp_path, capsys):
    parent = analysis_store.parents["ablation"]
    out = tmp_path / "report"
    code = main(["report", "--sweep", parent, "--tracking-uri", analysis_store.tracking_uri,
                 "--spec", f"{SPECS}/ablation_components.yaml", "--out", str(out)])
    assert code == 0 and str(out / "index.md") in capsys.readouterr().out
    written = {p.name for p in out.iterdir()}
    assert {"index.md", "table.md", "table.tex", "table.csv", "gap_scatter.png", "gap_scatter.pdf",
            "dynamics.png", "dynamics.pdf"} == written  # rows by variant: no plot against a parameter
    for stem in ("gap_scatter", "dynamics"):
        assert (out / f"{stem}.png").read_bytes().startswith(PNG) and (out / f"{stem}.pdf").read_bytes().startswith(PDF)
    # the files are the table and figures of these runs, shown together
    runs = load_runs(analysis_store.tracking_uri, sweep=parent)
    table = build_table(runs, load_spec(f"{SPECS}/ablation_components.yaml"))
    assert (out / "table.md").read_text() == table.to_markdown()
    assert (out / "table.csv").read_text() == table.to_csv()
    pd.testing.assert_frame_equal(pd.read_csv(out / "table.csv"), pd.read_csv(pd.io.common.StringIO(table.to_csv())))
    index = (out / "index.md").read_text()
    assert table.to_markdown() in index and "![" in index and "(gap_scatter.png)" in index
    assert "10 trial run(s) (1 failed, 9 finished)" in index
    # and the same files are browsable in the MLflow UI, under the sweep's parent run
    logged = {a.path for a in MlflowClient(analysis_store.tracking_uri).list_artifacts(parent, "report")}
    assert logged == {f"report/{name}" for name in written}


def test_report_of_an_experiment_finds_the_swept_parameter(analysis_store, tmp_path):
    out = tmp_path / "lambda"
    assert main(["report", "--experiment", "lambda", "--tracking-uri", analysis_store.tracking_uri,
                 "--out", str(out)]) == 0
    assert (out / "geometry.png").read_bytes().startswith(PNG)  # lambda is numeric: gap against it
    index = (out / "index.md").read_text()
    assert "Table layout: generic" in index and "lam" in (out / "table.md").read_text().lower()
    # the generic table shows what the runs' suite logged, benchmark by benchmark
    header = (out / "table.md").read_text().splitlines()[2]
    assert header == ("| objective.fusion\\_weight | n | scenes ZS | scenes probe | scenes I→T R@1 | scenes T→I R@1 | "
                      "scenes\\_count ZS | digits ZS | digits probe | ZS avg | scenes modality gap | GPU-hours |")


def _copy(analysis_store, tmp_path) -> str:
    """A copy of the shared store, whose parent runs a test may retag."""
    store = tmp_path / "copy.db"
    shutil.copy(analysis_store.tracking_uri.removeprefix("sqlite:///"), store)
    return f"sqlite:///{store}"


def test_the_shipped_spec_is_found_by_search_space_and_profile(analysis_store, tmp_path, capsys):
    uri = _copy(analysis_store, tmp_path)
    client, parent = MlflowClient(uri), analysis_store.parents["ablation"]
    client.set_tag(parent, "search_space", "/somewhere/search_spaces/ablation_components.yaml")
    out = tmp_path / "cpu"
    assert main(["report", "--sweep", parent, "--tracking-uri", uri, "--out", str(out)]) == 0
    assert "Table layout: analysis/specs/ablation_components.yaml." in (out / "index.md").read_text()
    table = build_table(load_runs(uri, sweep=parent), load_spec(f"{SPECS}/ablation_components.yaml"))
    assert (out / "table.md").read_text() == table.to_markdown()
    # under the gpu profile the gpu spec is chosen, whose ImageNet-1k columns these scenes runs never logged
    client.set_tag(parent, "profile", "gpu")
    assert main(["report", "--sweep", parent, "--tracking-uri", uri, "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert (f"analysis/specs/ablation_components.gpu.yaml: columns[0].metric: 'test/imagenet1k/zeroshot_top1' "
            f"names benchmark 'imagenet1k', which these runs do not evaluate (their benchmarks: scenes, "
            f"scenes_count, digits)") in err and "Traceback" not in err


def test_a_given_spec_naming_a_benchmark_the_runs_lack_is_refused(analysis_store, tmp_path, capsys):
    spec = tmp_path / "coco.yaml"
    spec.write_text("rows: {by: tags.variant}\ncolumns:\n  - {metric: test/scenes/zeroshot_top1}\n"
                    "  - {metric: test/zeroshot_avg}\n  - {metric: test/mscoco/i2t_r1}\n")
    assert main(["report", "--experiment", "ablation", "--tracking-uri", analysis_store.tracking_uri,
                 "--spec", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {spec}: columns[2].metric: 'test/mscoco/i2t_r1' names benchmark 'mscoco', which these runs do "
        f"not evaluate (their benchmarks: scenes, scenes_count, digits)")


def test_an_optuna_sweep_is_drawn_on_the_zero_shot_average_by_default(analysis_store, tmp_path):
    uri = _copy(analysis_store, tmp_path)
    client, parent = MlflowClient(uri), analysis_store.parents["lambda"]
    client.set_tag(parent, "search", "optuna")
    client.delete_tag(parent, "metric")  # no metric recorded: the default, val/zeroshot_avg
    out = tmp_path / "optuna"
    assert main(["report", "--sweep", parent, "--tracking-uri", uri, "--out", str(out)]) == 0
    assert (out / "optuna.png").read_bytes().startswith(PNG)


def test_unknown_and_empty_experiments_give_one_clear_line(analysis_store, tmp_path, capsys):
    store = tmp_path / "copy.db"
    shutil.copy(analysis_store.tracking_uri.removeprefix("sqlite:///"), store)
    uri = f"sqlite:///{store}"
    MlflowClient(uri).create_experiment("empty")
    for name, message in (("nope", "error: no experiment 'nope'"), ("empty", "has no trial runs yet")):
        assert main(["report", "--experiment", name, "--tracking-uri", uri, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["report", "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
