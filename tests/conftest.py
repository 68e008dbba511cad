"""Fixtures shared by several test modules."""
import os
import pathlib

import pytest

from kfac_bench.data.faces import PACKAGED_OLIVETTI
from kfac_bench.utils import configure_cpu_eigensolvers

# as the harness does where it starts: the error metrics' eigensolvers on one CPU thread unless
# OMP_WAIT_POLICY=PASSIVE (kfac_bench.curvature.metrics reads no environment itself)
configure_cpu_eigensolvers()


class Logs(list):
    """A ``log=`` callable that keeps the messages."""

    def __call__(self, msg):
        self.append(str(msg))

    def text(self):
        return "\n".join(self)


@pytest.fixture
def log():
    return Logs()


@pytest.fixture
def olivetti_real():
    """The real Olivetti file ($KFAC_BENCH_OLIVETTI, else the copy shipped with the package)."""
    path = pathlib.Path(os.environ.get("KFAC_BENCH_OLIVETTI") or PACKAGED_OLIVETTI)
    if not path.is_file():
        pytest.skip(f"{path} not present (set KFAC_BENCH_OLIVETTI)")
    return path


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine multi-threaded eigh slows down by 10x under contention."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
