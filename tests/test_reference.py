"""The authors' published curves vendored in kfac_bench/reference/: the restricted reader of their
pickled .npy files, the regeneration script (on a made-up checkout, and on the real repository when
$KFAC_BENCH_AUTHORS_REPO points at it), the vendored data, and a cross-check against the development
machines' independent copy (../shared/reference/, never used at run time)."""
import importlib.util
import io
import math
import os
import pathlib
import pickle

import numpy as np
import pandas as pd
import pytest
from numpy.lib import format as npy_format

from kfac_bench.reference import (load_authors_curves, load_authors_hyperparameters, load_authors_iterations,
                                  load_provenance)
from kfac_bench.reference.npy_pickle import RefusedPickle, read_pickled_npy, restricted_loads

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "regenerate_authors_reference.py"
# development and CI machines keep shared/ beside the repository (never used at run time)
SHARED_CURVES = ROOT.parent / "shared" / "reference" / "authors_curves.csv"
METHODS = ["sgd", "adam", "kfac", "kpsvd", "deflation", "lanczos", "kfac_corrected"]
DATASETS = ["curves", "mnist", "faces"]


def _npy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def _npy_with_payload(payload: bytes) -> bytes:
    """A .npy file whose header says 0-d object array and whose body is ``payload``."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


class _CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_reader_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(np.array({"train_loss": _CallsSystem(marker)}, dtype=object), protocol=3)
    with pytest.raises(RefusedPickle, match="system"):
        read_pickled_npy(_npy_with_payload(payload))
    with pytest.raises(RefusedPickle):
        restricted_loads(pickle.dumps(_CallsSystem(marker)))
    for target in (eval, getattr, __import__):   # other classics
        with pytest.raises(RefusedPickle):
            restricted_loads(pickle.dumps(target))
    assert not marker.exists()
    # what plain pickle would have done with the same bytes: the reason for the restriction
    pickle.loads(pickle.dumps(_CallsSystem(marker)))
    assert marker.exists()


def test_restricted_reader_accepts_a_dict_of_arrays_and_lists():
    record = {"train_loss": [0.5, 0.25], "iteras": [1, 2, 3], "w": np.arange(6, dtype=np.float32).reshape(2, 3),
              "scalar": np.float64(1.5), "nested": {"t": (1, "a", None)}}
    got = read_pickled_npy(_npy_bytes(record))
    assert got["train_loss"] == [0.5, 0.25] and got["iteras"] == [1, 2, 3] and got["nested"] == {"t": (1, "a", None)}
    assert got["w"].dtype == np.float32 and np.array_equal(got["w"], record["w"]) and got["scalar"] == 1.5
    plain = np.linspace(0, 1, 5)   # a numeric .npy holds no pickle
    assert np.array_equal(read_pickled_npy(_npy_bytes(plain)), plain)


def test_vendored_curves_are_21_pairs_of_200_epochs():
    curves = load_authors_curves()
    assert list(curves.columns) == ["dataset", "method", "epoch", "train_loss", "val_loss", "time_s"]
    sizes = curves.groupby(["dataset", "method"]).size()
    assert len(sizes) == 21 and set(sizes) == {200}
    assert set(curves["dataset"]) == set(DATASETS) and set(curves["method"]) == set(METHODS)
    assert (curves.groupby(["dataset", "method"])["epoch"].apply(lambda e: list(e) == list(range(1, 201)))).all()
    assert np.isfinite(curves[["train_loss", "val_loss", "time_s"]].to_numpy()).all()
    assert (curves.groupby(["dataset", "method"])["time_s"].apply(lambda t: t.is_monotonic_increasing)).all()

    hyper = load_authors_hyperparameters()
    assert len(hyper) == 21 and hyper["lr"].notna().all()
    curvature = hyper[~hyper["method"].isin(["sgd", "adam"])]
    assert curvature[["damping", "kl", "T_cov", "T_inv"]].notna().all().all()
    assert dict(zip(hyper["method"], hyper["authors_name"]))["deflation"] == "kpsvd_d"

    iterations = load_authors_iterations()
    assert set(iterations.groupby(["dataset", "method"]).size().index) == set(sizes.index)
    assert iterations["epoch"].max() == load_provenance()["iteration_epochs"]

    provenance = load_provenance()
    assert provenance["commit"] == provenance["paper_commit"]
    assert len(provenance["sources"]) == 42 and all(len(s["sha256"]) == 64 for s in provenance["sources"])
    assert provenance["method_names"]["lanczos"] == "lzs" and provenance["method_names"]["kfac_corrected"] == "kfac_cor"


def test_vendored_files_are_what_provenance_says():
    import hashlib
    from kfac_bench.reference import REFERENCE_DIR
    for name, info in load_provenance()["outputs"].items():
        assert hashlib.sha256((REFERENCE_DIR / name).read_bytes()).hexdigest() == info["sha256"], name


def _script():
    spec = importlib.util.spec_from_file_location("regenerate_authors_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_regenerates_from_a_checkout(tmp_path):
    """A made-up checkout with the authors' layout: known numbers in, the same numbers out, our names."""
    script = _script()
    repo = tmp_path / "natural-gradients"
    expected = {}
    for d, (dataset, folder, batch) in enumerate(script.DATASETS):
        for m, (method, name) in enumerate(script.AUTHORS_NAMES.items()):
            epochs, per_epoch = 3, 2 + d
            train = [1.0 / (d + m + e + 1) for e in range(epochs)]
            record = {"train_loss": train, "val_loss": [t + 0.5 for t in train], "times": [10.0 * (e + 1) for e in range(epochs)],
                      "train_itera_loss": [0.1 * i for i in range(epochs * per_epoch)],
                      "train_itera_time": [float(i) for i in range(epochs * per_epoch)],
                      "iteras": list(range(1, epochs * per_epoch + 1))}
            expected[(dataset, method)] = (record, per_epoch)
            for sub, obj in ((f"outputs_{batch}", record),
                             ("grid_search", {"lr": 0.1 * (m + 1)} if method in ("sgd", "adam") else
                              {"damping": 1e-3, "lr": 0.01 * (m + 1), "T_cov": 100, "T_inv": 100, "kl": 0.01})):
                path = repo / script.RESULTS / folder / sub / f"{name}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, obj, allow_pickle=True)
    out = tmp_path / "out"
    assert script.main([str(repo), "--out", str(out), "--iteration-epochs", "2"]) == 0

    curves = pd.read_csv(out / "authors_curves.csv")
    assert len(curves) == 21 * 3
    for (dataset, method), (record, per_epoch) in expected.items():
        part = curves[(curves["dataset"] == dataset) & (curves["method"] == method)]
        assert list(part["epoch"]) == [1, 2, 3]
        assert list(part["train_loss"]) == record["train_loss"] and list(part["time_s"]) == record["times"]
    iterations = pd.read_csv(out / "authors_iterations.csv")
    mnist = iterations[(iterations["dataset"] == "mnist") & (iterations["method"] == "lanczos")]
    assert list(mnist["epoch"]) == [1, 1, 1, 2, 2, 2] and list(mnist["iteration"]) == [1, 2, 3, 4, 5, 6]
    hyper = pd.read_csv(out / "authors_hyperparameters.csv").set_index(["dataset", "method"])
    assert hyper.loc[("faces", "deflation"), "authors_name"] == "kpsvd_d"
    assert hyper.loc[("faces", "deflation"), "batch_size"] == 1024 and math.isnan(hyper.loc[("faces", "sgd"), "damping"])
    provenance = load_provenance(out / "PROVENANCE.json")
    assert len(provenance["sources"]) == 42 and provenance["commit"].startswith("unknown")


def test_script_refuses_a_malicious_result_file(tmp_path):
    script = _script()
    repo = tmp_path / "natural-gradients"
    path = repo / script.RESULTS / "CURVES" / "outputs_256" / "sgd.npy"
    path.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    path.write_bytes(_npy_with_payload(pickle.dumps(_CallsSystem(marker))))
    with pytest.raises(RefusedPickle):
        script.main([str(repo), "--out", str(tmp_path / "out")])
    assert not marker.exists()


@pytest.mark.skipif(not os.environ.get("KFAC_BENCH_AUTHORS_REPO"),
                    reason="set KFAC_BENCH_AUTHORS_REPO to a checkout (or git dir) of the authors' repository")
def test_script_on_the_authors_repository_rewrites_the_vendored_bytes(tmp_path):
    from kfac_bench.reference import REFERENCE_DIR
    script = _script()
    source = pathlib.Path(os.environ["KFAC_BENCH_AUTHORS_REPO"])
    args = [str(source), "--out", str(tmp_path)] + ([] if (source / "apps").is_dir() else ["--commit", script.PAPER_COMMIT])
    assert script.main(args) == 0
    for name in ("authors_curves.csv", "authors_iterations.csv", "authors_hyperparameters.csv", "PROVENANCE.json"):
        assert (tmp_path / name).read_bytes() == (REFERENCE_DIR / name).read_bytes(), name


def test_cross_check_against_the_independent_copy():
    """The shared copy was made separately from the same files: the vendored curves must equal it."""
    path = pathlib.Path(os.environ.get("KFAC_BENCH_AUTHORS_CURVES") or SHARED_CURVES)
    if not path.is_file():
        pytest.skip(f"{path} not present (set KFAC_BENCH_AUTHORS_CURVES)")
    ours, theirs = load_authors_curves(), pd.read_csv(path)
    key = ["dataset", "method", "epoch"]
    merged = ours.merge(theirs, on=key, how="outer", suffixes=("", "_other"), indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) == 4200
    for column in ("train_loss", "val_loss", "time_s"):
        assert (merged[column] - merged[f"{column}_other"]).abs().max() <= 1e-12, column
