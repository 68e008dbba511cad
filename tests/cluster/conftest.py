"""Fixtures of the SLURM tests (test_slurm.py): they run only inside `make test-cluster`."""
import pytest

from slurm_helpers import SMALL, kfac_bench, summaries


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One data folder for every cluster test: each generated CURVES set is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def epoch_seconds(data_dir, tmp_path_factory):
    """Seconds a KFAC epoch on SMALL takes on this machine now (training, one thread), from a 3-epoch run
    here, which also builds the SMALL data set before jobs that would build it at once: the tests that
    need a job to run longer than something size their runs with it."""
    where = tmp_path_factory.mktemp("speed")
    proc = kfac_bench("run", "optimizer=kfac", "trainer.epochs=3", *SMALL, "threads=1", "trainer.progress=false",
                      data_dir=data_dir, results=where / "results", cwd=where)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return next(iter(summaries(where / "results").values()))["seconds_per_epoch"]
