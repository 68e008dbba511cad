"""Issue 20: the mathematics apart from the harness, the estimate interfaces, one optimizer interface."""
import json
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch import Tensor

from kfac_bench.curvature import (KFAC, Approximation, CurvatureBlock, CurvatureEstimate, DampedInverse,
                                  EstimationMethod, FittedEstimate, SampledFisherBlock)
from kfac_bench.curvature.kronecker import vec
from kfac_bench.models import build_mlp
from kfac_bench.optim import KFAC as KFACOptimizer
from kfac_bench.optim import FirstOrder, KroneckerFactoredOptimizer, StepReport, TrainingOptimizer
from kfac_bench.optim import as_training_optimizer
from kfac_bench.optim.factory import build_training_optimizer
from kfac_bench.registry import APPROXIMATIONS, make_approximation

from oracles import DT, random_stats

ROOT = pathlib.Path(__file__).resolve().parent.parent
# every module of the training loop, the Figure 1 study, the bench and the peer bench
HARNESS = sorted(str(p.relative_to(ROOT / "kfac_bench")) for folder in ("runs", "studies")
                 for p in (ROOT / "kfac_bench" / folder).glob("*.py"))


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ layering
def test_the_mathematics_imports_nothing_of_the_harness_and_changes_no_setting():
    seen = _fresh(
        "import os, sys, json, torch\n"
        "torch.set_num_threads(1)\n"
        "threads, env = torch.get_num_threads(), dict(os.environ)\n"
        "import kfac_bench.curvature, kfac_bench.curvature.metrics, kfac_bench.curvature.spectrum, kfac_bench.curvature.estimate\n"
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith('kfac_bench')),\n"
        "                  'threads': torch.get_num_threads() == threads, 'env': dict(os.environ) == env,\n"
        "                  'eigen': kfac_bench.curvature.spectrum.CPU_EIGEN_THREADS}))")
    others = [m for m in seen["modules"] if m != "kfac_bench" and not m.startswith("kfac_bench.curvature")]
    assert others == [], others
    assert seen["threads"] and seen["env"]
    assert seen["eigen"] is None        # nothing read from the environment at import


def test_the_optimizers_do_not_read_the_registry():
    """The list of methods is above the optimizers: importing them loads no registry (the factory
    and the authors'-code switch, the harness's glue, do)."""
    seen = _fresh("import sys, json, kfac_bench.optim\n"
                  "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kfac_bench'))))")
    assert "kfac_bench.registry" not in seen
    assert not {"kfac_bench.optim.factory", "kfac_bench.optim.authors_code", "kfac_bench.runs.train"} & set(seen)


def test_the_eigensolver_threads_are_the_harness_s_decision(monkeypatch):
    from kfac_bench.curvature import spectrum as metrics   # the eigensolvers' module
    from kfac_bench.utils import configure_cpu_eigensolvers
    before = metrics.CPU_EIGEN_THREADS
    try:
        monkeypatch.setenv("OMP_WAIT_POLICY", "active")
        assert configure_cpu_eigensolvers() == 1 and metrics.CPU_EIGEN_THREADS == 1
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        assert configure_cpu_eigensolvers() is None and metrics.CPU_EIGEN_THREADS is None
        with pytest.raises(ValueError, match="integer"):
            metrics.set_cpu_eigen_threads(0)
    finally:
        metrics.set_cpu_eigen_threads(before)


def test_the_harness_never_branches_on_the_optimizer():
    assert {"runs/train.py", "studies/fisher.py", "studies/bench.py", "studies/bench_peers.py"} <= set(HARNESS)
    names = "|".join(["sgd", "adam", *APPROXIMATIONS])
    for file in HARNESS:
        source = (ROOT / "kfac_bench" / file).read_text()
        assert "KroneckerFactoredOptimizer" not in source, file
        assert not re.search(r"isinstance\([^)]*opt", source), file
        assert not re.search(rf"""[!=]=\s*["']({names})["']""", source), file
        assert "step(targets=" not in source.replace("train_step(targets=", ""), file
        assert not re.search(r"\.last_fit\b|\._curv\b|\[\"approx\"\]", source), file


def test_bench_and_peer_bench_share_helpers_without_a_cycle():
    peers = (ROOT / "kfac_bench" / "studies" / "bench_peers.py").read_text()
    assert not re.search(r"from \.bench import|import kfac_bench\.bench\b", peers)


def test_dead_code_and_legacy_accessors_are_gone():
    import kfac_bench.curvature.inverse as inverse
    import kfac_bench.optim.factory as factory
    assert not hasattr(inverse, "inverse_from_state") and not hasattr(factory, "FIRST_ORDER")
    block = CurvatureBlock(KFAC())
    with pytest.raises(TypeError):
        block["approx"]
    assert not hasattr(KroneckerFactoredOptimizer, "_curv")


# --------------------------------------------------------------------------- estimate protocols
def test_every_method_implements_the_estimate_interfaces():
    abar, g = random_stats(20, 3, 4, seed=3)
    for name in APPROXIMATIONS:
        method = make_approximation(name, tol=1e-10)
        assert isinstance(method, EstimationMethod), name
        block = method.new_estimate()
        assert isinstance(block, CurvatureEstimate), name
        fit, accepted = block.update(SampledFisherBlock(abar, g), rho=0.0)
        assert accepted and isinstance(fit.approximation, FittedEstimate), name
        block.invert(1e-1)
        assert isinstance(block.inverse, DampedInverse), name
        assert torch.allclose(block.to_dense(), fit.approximation.to_dense())


class DiagonalEstimate:
    """Not a Kronecker sum: the diagonal of the sampled Fisher block, as a (d_g, d_a) matrix."""

    rank = 1

    def __init__(self, diag: Tensor):
        self.diag = diag

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.diag).all())

    def to_dense(self) -> Tensor:
        return torch.diag(vec(self.diag))


class DiagonalInverse:
    def __init__(self, inv: Tensor):
        self.inv = inv

    def solve(self, x):
        return x * self.inv

    def solve_with_bias(self, weight_grad, bias_grad):
        return weight_grad * self.inv[:, :-1], bias_grad * self.inv[:, -1]

    def bare_products(self, x):
        return lambda: None

    def state(self):
        return {"inv": self.inv}

    def dense_inverse(self):
        return torch.diag(vec(self.inv))


class DiagonalFisher(Approximation):
    """A method whose estimate is a diagonal (EKFAC's is a diagonal in a Kronecker eigenbasis): it
    implements the protocols, and the optimizer runs it unchanged."""

    name = "diagonal"

    def fit(self, batch, previous=None, rho=0.0, warm=None):
        from kfac_bench.curvature import FitResult
        diag = (batch.g ** 2).mT @ (batch.abar ** 2) / batch.m
        if previous is not None and rho:
            diag = rho * previous.diag + (1 - rho) * diag
        return FitResult(DiagonalEstimate(diag))

    def damped_inverse(self, approx, damping, psd_floor=0.1, convention="paper"):
        return DiagonalInverse(1.0 / (approx.diag + damping))

    def inverse_from_state(self, state):
        return DiagonalInverse(state["inv"])


def test_a_non_kronecker_estimate_fits_the_interfaces_and_trains():
    abar, g = random_stats(30, 3, 4, seed=5)
    method = DiagonalFisher()
    assert isinstance(method, EstimationMethod)
    block = method.new_estimate()
    fit, accepted = block.update(SampledFisherBlock(abar, g), rho=0.0)
    assert accepted and isinstance(fit.approximation, FittedEstimate)
    dense = SampledFisherBlock(abar, g).to_dense()
    assert torch.allclose(block.to_dense(), torch.diag(torch.diagonal(dense)))
    block.invert(1e-2)
    x = torch.randn(4, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    expected = torch.linalg.solve(block.to_dense() + 1e-2 * torch.eye(16, dtype=DT), vec(x))
    assert torch.allclose(vec(block.solve(x)), expected)
    model = build_mlp([12, 8, 12], "relu", torch.Generator().manual_seed(0))
    opt = KroneckerFactoredOptimizer(model, lr=0.05, damping=1e-2, approximation=DiagonalFisher, T1=1, T2=1)
    data = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))
    from kfac_bench.curvature import get_likelihood
    lik = get_likelihood("bernoulli")
    losses = []
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        loss = lik.batch_loss(model(data), data)
        loss.backward()
        report = opt.train_step(targets=data)
        assert report.curvature_update and report.inverse_update
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    opt.close()


# ------------------------------------------------------------------------ optimizer interface
def _loop(opt: TrainingOptimizer, model, data, steps=4):
    from kfac_bench.curvature import get_likelihood
    lik = get_likelihood("bernoulli")
    reports = []
    for s in range(steps):
        x = data[s * 8:(s + 1) * 8]
        opt.zero_grad(set_to_none=True)
        loss = lik.batch_loss(model(x), x)
        due = opt.curvature_due()
        loss.backward()
        report = opt.train_step(targets=x)
        assert isinstance(report, StepReport) and report.curvature_update == due
        reports.append(report)
    return reports


@pytest.mark.parametrize("name", ["sgd", "adam", "kfac", "lanczos_k"])
def test_every_registry_entry_is_driven_alike(name):
    model = build_mlp([12, 8, 12], "relu", torch.Generator().manual_seed(0))
    cfg = {"name": name, "lr": 0.05, **({"damping": 1e-2, "T1": 2, "T2": 2} if name not in ("sgd", "adam") else {})}
    opt = build_training_optimizer(cfg, model, "bernoulli", record_timings=True)
    assert isinstance(opt, TrainingOptimizer)
    data = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))
    reports = _loop(opt, model, data)
    curvature = name not in ("sgd", "adam")
    assert [r.curvature_update for r in reports] == ([True, False, True, False] if curvature else [False] * 4)
    assert bool(reports[0].fits) == curvature and bool(opt.curvature_layers()) == curvature
    assert ("statistics" in reports[0].phases) == curvature and ("fit" in reports[0].layer_phases) == curvature
    assert len(opt.trial_statistics(data[:8], torch.Generator().manual_seed(0))) == (2 if curvature else 0)
    opt.request_curvature_update()
    assert opt.curvature_due() == curvature
    state = opt.state_dict()
    opt.load_state_dict(state)
    opt.close()


def test_first_order_adapter_is_the_torch_optimizer_itself():
    model = build_mlp([12, 8, 12], "relu", torch.Generator().manual_seed(0))
    twin = build_mlp([12, 8, 12], "relu", torch.Generator().manual_seed(0))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapped = as_training_optimizer(sgd)
    assert isinstance(wrapped, FirstOrder) and wrapped.optimizer is sgd
    plain = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    data = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))
    _loop(wrapped, model, data)
    from kfac_bench.curvature import get_likelihood
    for s in range(4):
        x = data[s * 8:(s + 1) * 8]
        plain.zero_grad(set_to_none=True)
        get_likelihood("bernoulli").batch_loss(twin(x), x).backward()
        plain.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    assert wrapped.state_dict() == sgd.state_dict() or str(wrapped.state_dict()) == str(sgd.state_dict())
    kfac = KFACOptimizer(twin, lr=0.1)
    assert as_training_optimizer(kfac) is kfac
    kfac.close()
    with pytest.raises(TypeError):
        as_training_optimizer(object())


# ------------------------------------------------------------------------------- import circles
def import_circles(package: str, path: str | None = None) -> list[list[str]]:
    """Every import circle among the modules of ``package``, each once, as its modules (sorted).
    grimp reads every import statement: module-level, inside functions and under TYPE_CHECKING."""
    import grimp
    if path is not None:
        sys.path.insert(0, path)
    try:
        graph = grimp.build_graph(package, cache_dir=None)
    finally:
        if path is not None:
            sys.path.remove(path)
    circles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                circles.add(tuple(sorted(set(back))))
    return sorted(map(list, circles))


def test_no_import_circle_anywhere_in_the_package():
    circles = import_circles("kfac_bench")
    assert not circles, "import circles in kfac_bench/ (break each by moving the shared part down a layer):\n" + \
        "\n".join("  " + " <-> ".join(c) for c in circles)


def test_the_circle_finder_sees_type_checking_and_function_level_imports(tmp_path):
    pkg = tmp_path / "circles_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    (pkg / "b.py").write_text("from .a import TYPE_CHECKING\nB = 1\n")
    (pkg / "c.py").write_text("def f():\n    from .d import g\n    return g\n")
    (pkg / "d.py").write_text("from .c import f\ng = 2\n")
    (pkg / "e.py").write_text("from .a import TYPE_CHECKING\n")      # no circle
    assert import_circles("circles_demo", str(tmp_path)) == [["circles_demo.a", "circles_demo.b"],
                                                              ["circles_demo.c", "circles_demo.d"]]


def test_old_module_paths_still_import_and_name_the_new_one():
    import importlib
    import warnings
    from kfac_bench import MOVED_MODULES
    for old, new in MOVED_MODULES.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert any(new in str(w.message) and issubclass(w.category, DeprecationWarning) for w in caught), old
        target = importlib.import_module(new)
        public = [k for k in vars(target) if not k.startswith("_")]
        assert public and all(getattr(module, k) is getattr(target, k) for k in public), old
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), f"{old} is a file again"


# What each folder (and root module) of kfac_bench may import of the others: docs/design.md, section 2.
LIBRARY = {"curvature", "optim", "models"}
SHARED = {"registry", "options", "configs", "utils", "search_space"}
MAY_IMPORT = {
    "curvature": set(),
    "optim": {"curvature", "registry", "options"},          # registry/options: factory.py, authors_code.py only
    "models": set(),
    "data": set(),
    "reference": set(),
    "runs": LIBRARY | {"data", "utils"},
    "report": {"optim", "runs", "reference"} | SHARED,
    "studies": LIBRARY | {"data", "report"} | SHARED,
    "reproduce": LIBRARY | {"data", "runs", "report"} | SHARED,
    "registry": {"options", "configs", "search_space"},
    "options": set(), "configs": set(), "search_space": set(),
    "utils": {"curvature"},                                 # the eigensolvers' thread count
}


def test_each_folder_imports_only_what_the_code_map_allows():
    import grimp
    graph = grimp.build_graph("kfac_bench", cache_dir=None)

    def part(module: str) -> str:
        return module.split(".")[1] if "." in module else "(root)"
    seen: dict[str, set[str]] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            if part(importer) != part(imported):
                seen.setdefault(part(importer), set()).add(part(imported))
    parts = {part(m) for m in graph.modules} - {"(root)", "cli", "__main__"}
    assert parts <= set(MAY_IMPORT), f"folders the code map does not list: {parts - set(MAY_IMPORT)}"
    wrong = {p: sorted(seen.get(p, set()) - MAY_IMPORT[p]) for p in MAY_IMPORT if seen.get(p, set()) - MAY_IMPORT[p]}
    assert not wrong, f"imports the code map (docs/design.md, section 2) does not allow: {wrong}"
    optim_registry_users = {m for m in graph.modules if part(m) == "optim"
                            and {"kfac_bench.registry", "kfac_bench.options"} & graph.find_modules_directly_imported_by(m)}
    assert optim_registry_users <= {"kfac_bench.optim.factory", "kfac_bench.optim.authors_code"}, optim_registry_users
