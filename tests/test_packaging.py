"""The installable package: a wheel built by ``pip wheel`` from the working tree, installed into a
fresh virtual environment outside the checkout, runs ``kfac-bench run`` with the configs it carries,
lists the config groups in ``--help`` under its own name, and takes a user's config folder.

Offline and quick: the wheel is built with this environment's setuptools (``--no-build-isolation``,
the ``test`` extra installs it) and without dependencies; the scratch venv reuses this
environment's packages (torch, Hydra, ...) through a ``.pth`` file instead of installing them."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["dataset.generator.n_images=600", "dataset.n_train=500", "dataset.n_val=100", "trainer.progress=false",
        "trainer.epochs=1", "threads=1"]

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                       reason="setuptools is missing: install the test extra (pip install -e '.[test]')"),
    pytest.mark.skipif(os.name != "posix", reason="the scratch venv's layout (bin/) is the POSIX one"),
]


def call(*args, cwd, env=None, timeout=600):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{args} exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"      # what a clean clone holds for the build (no build/ or egg-info of the checkout)
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("kfac_bench", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    call(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-w", tmp / "dist", "-q",
         cwd=tmp, env=offline)
    (wheel,) = (tmp / "dist").glob("kfac_bench-*.whl")
    venv = tmp / "venv"
    call(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    purelib = call(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip()
    # this environment's packages (torch & co.) behind the venv's own: the wheel's kfac_bench comes first
    reused = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "_kfac_bench_test_reuse.pth").write_text("\n".join(reused) + "\n")
    # --ignore-installed: the reused environment's own kfac-bench (visible through the .pth) is left alone
    call(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--ignore-installed", wheel, "-q",
         cwd=tmp, env=offline)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", KFAC_BENCH_DATA=str(tmp / "data"), KFAC_BENCH_RESULTS=str(tmp / "results"))
    work = tmp / "elsewhere"        # outside the checkout: nothing of it on the path or in the cwd
    work.mkdir()
    return venv, env, work


def test_the_wheel_carries_its_configs_and_runs_outside_the_checkout(installed):
    venv, env, work = installed
    where = call(venv / "bin" / "python", "-c", "import kfac_bench.configs as c; print(c.__file__); print(c.config_dir())",
                 cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where        # the wheel's copy, not the checkout
    call(venv / "bin" / "kfac-bench", "run", *TINY, cwd=work, env=env)
    (run,) = (work.parent / "results" / "runs" / "curves" / "sgd").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    assert (run / "fingerprint.json").exists() and (run / "config.yaml").exists()


def test_every_package_and_data_file_of_the_checkout_is_in_the_wheel(installed):
    """pyproject.toml lists the packages (conf/ is mapped into the wheel, so they are not found
    automatically): a new subpackage, config group or data file must not be left out."""
    venv, env, work = installed
    site = Path(call(venv / "bin" / "python", "-c", "import kfac_bench, pathlib; print(pathlib.Path(kfac_bench.__file__).parent)",
                     cwd=work, env=env).stdout.strip())
    shipped = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    expected = {p.relative_to(ROOT / "kfac_bench").as_posix() for p in (ROOT / "kfac_bench").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}
    expected |= {"conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected - shipped == set()


def test_help_names_the_program_and_lists_the_groups(installed):
    venv, env, work = installed
    out = call(venv / "bin" / "kfac-bench", "run", "--help", cwd=work, env=env).stdout
    assert out.startswith("kfac-bench run: ") and "cli" not in out.split("== Config ==")[0]
    shipped_datasets = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "dataset").glob("*.yaml"))
    assert "dataset: " + ", ".join(shipped_datasets) in out and "mnist_conv" in shipped_datasets
    from kfac_bench.registry import method_names
    assert _optimizer_line(out) == ", ".join(sorted(method_names()))     # one config per registry entry
    assert "--config-dir" in out


def _optimizer_line(help_text: str) -> str:
    """The optimizers ``--help`` lists, after the shared parts of their configs (``_curvature``, ...:
    kfac_bench/options.py, named by the configs' defaults lists, which the header explains)."""
    from kfac_bench.options import config_nodes
    line, = [x for x in help_text.splitlines() if x.startswith("optimizer: ")]
    shared = ", ".join(sorted(config_nodes())) + ", "
    assert line.startswith("optimizer: " + shared) and "starting with _ are the parts" in help_text
    return line[len("optimizer: " + shared):]


def test_a_users_config_folder_joins_the_search_path(installed):
    from kfac_bench.registry import method_names
    venv, env, work = installed
    mine = work / "my_conf" / "optimizer"
    mine.mkdir(parents=True)
    (mine / "slow_sgd.yaml").write_text("name: sgd\nlr: 0.05\nmomentum: 0.5\nweight_decay: 0.0\n")
    out = call(venv / "bin" / "kfac-bench", "run", "--config-dir", "my_conf", "optimizer=slow_sgd", "--cfg", "job",
               cwd=work, env=env).stdout
    assert "lr: 0.05" in out and "momentum: 0.5" in out
    assert _optimizer_line(call(venv / "bin" / "kfac-bench", "run", "--config-dir", "my_conf", "--help", cwd=work,
                                env=env).stdout) == ", ".join(sorted([*method_names(), "slow_sgd"]))


def test_the_wheel_builds_faces_from_its_own_olivetti_copy(installed):
    """FACES (generated stand-in) on a fresh install: no Olivetti path, no variable -- the wheel's copy."""
    venv, env, work = installed
    env = {k: v for k, v in env.items() if k != "KFAC_BENCH_OLIVETTI"}
    where = call(venv / "bin" / "python", "-c", "from kfac_bench.data import faces; faces.check_packaged_olivetti(); "
                 "print(faces.PACKAGED_OLIVETTI)", cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    call(venv / "bin" / "kfac-bench", "run", "dataset=faces", "dataset.generator.n_images=300", "dataset.n_train=200",
         "dataset.n_val=50", "dataset.batch_size=100", "trainer.epochs=1", "trainer.progress=false", "threads=1",
         cwd=work, env=env)
    (run,) = (work.parent / "results" / "runs" / "faces" / "sgd").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert str(venv) not in (run / "summary.json").read_text()     # the shipped copy named by its package path
