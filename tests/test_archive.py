"""The committable archive of finished runs: the four compact files, no checkpoint, no machine path,
and a report reads it as it read the runs."""
import json
from pathlib import Path

from kfac_bench.report.archive import ARCHIVED_FILES, archive_runs, relative_text, local_roots


def _run(folder: Path, status: str, results: Path, data: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"results_dir: {results}\ndata_dir: {data}\n")
    (folder / "fingerprint.json").write_text("{}")
    (folder / "summary.json").write_text(json.dumps({"status": status, "command": f"run results_dir={results}",
                                                     "cache": f"{data}/curves/x.pt"}))
    (folder / "metrics.csv").write_text("epoch,train_loss\n0,1\n")
    (folder / "checkpoint.pt").write_bytes(b"big")


def test_archive_keeps_finished_runs_compact_and_relative(tmp_path):
    results, data = tmp_path / "machine" / "results" / "verdict", tmp_path / "machine" / "data"
    _run(results / "runs" / "curves" / "kfac" / "a", "ok", results, data)
    _run(results / "runs" / "curves" / "sgd" / "b", "diverged", results, data)
    _run(results / "runs" / "curves" / "adam" / "c", "running", results, data)
    _run(results / "runs" / "curves" / "shampoo" / "d", "failed", results, data)
    dest = tmp_path / "docs" / "runs" / "verdict"
    written = archive_runs(results, dest, data_dir=data)
    assert sorted(p.name for p in written) == ["a", "b", "d"]      # the unfinished run is left out, a failure kept
    a = dest / "runs" / "curves" / "kfac" / "a"
    assert sorted(p.name for p in a.iterdir()) == sorted(ARCHIVED_FILES)   # no checkpoint
    for path in dest.rglob("*"):
        if path.is_file():
            assert str(tmp_path) not in path.read_text(), path
    assert json.loads((a / "summary.json").read_text())["cache"] == "data/curves/x.pt"
    assert (a / "config.yaml").read_text() == "results_dir: .\ndata_dir: data\n"


def test_relative_text_rewrites_the_longest_root_first(tmp_path):
    roots = local_roots(tmp_path / "co" / "results", None, tmp_path / "co")
    assert relative_text(f"{tmp_path}/co/results/runs and {tmp_path}/co/x", roots) == "./runs and ./x"


def test_archive_takes_the_figure1_studies_too(tmp_path):
    study = tmp_path / "results" / "fisher" / "mnist" / "default"
    study.mkdir(parents=True)
    (study / "fisher_errors.csv").write_text("iteration,layer\n1,5\n")
    (study / "summary.json").write_text(json.dumps({"dataset": "mnist", "data_dir": f"{tmp_path}/data"}))
    (study / "config.yaml").write_text(f"data_dir: {tmp_path}/data\n")
    archive_runs(tmp_path / "results", tmp_path / "docs", data_dir=tmp_path / "data")
    copied = tmp_path / "docs" / "fisher" / "mnist" / "default"
    assert sorted(p.name for p in copied.iterdir()) == ["config.yaml", "fisher_errors.csv", "summary.json"]
    assert json.loads((copied / "summary.json").read_text())["data_dir"] == "data"
