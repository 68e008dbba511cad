"""Kronecker rank k (issue 14): the registry, the rank-k approximation against the dense optimum, the
rank-k damped solve against ``torch.linalg.solve``, rank 1 and 2 through the new path, the curvature
block's lifecycle, the optimizer, the Figure 1 error-vs-rank study and its figure. Dense float64
oracles on tiny problems (tests/oracles.py)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from kfac_bench import registry
from kfac_bench.curvature import (KPSVD, CurvatureBlock, KroneckerSum, KroneckerSumInverse, Lanczos, LanczosK,
                                  SampledFisherBlock)
from kfac_bench.options import CurvatureOptions, option_names
from kfac_bench.registry import make_approximation
from kfac_bench.curvature.inverse import damped_first_term, damped_inverse, leading_damped_inverse
from kfac_bench.curvature.kronecker import vec
from kfac_bench.curvature.metrics import FisherReference
from oracles import DT, best_rank_r_of_zigzag, dense_fisher, random_stats

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ registry
def test_registry_lists_every_method_once_in_order():
    assert registry.method_names() == ["sgd", "adam", "soap", "shampoo", "scalable_shampoo", "muon", "kron", "kfac",
                                       "kpsvd", "deflation", "lanczos", "kfac_corrected", "lanczos_k", "ekfac"]
    assert registry.first_order_method_names() == ["sgd", "adam", "soap", "shampoo", "scalable_shampoo", "muon", "kron"]
    assert registry.curvature_method_names() == registry.method_names()[7:]
    assert registry.paper_method_names(curvature_only=True) == ["kfac", "kpsvd", "deflation", "lanczos",
                                                                "kfac_corrected"]
    assert [registry.METHODS[n].rank for n in registry.method_names()] == [None] * 7 + [1, 1, 2, 2, 2, 3, 1]
    assert registry.get_method("lanczos_k").rank_of({"k": 5}) == 5
    assert registry.method_label("lanczos_k", 4) == "Lanczos rank 4"
    assert registry.method_label("kfac_corrected") == "KFAC-corrected"
    with pytest.raises(ValueError, match="unknown method 'newton'.*lanczos_k"):
        registry.get_method("newton")


def test_registry_resolves_classes_and_configs():
    from kfac_bench.registry import APPROXIMATIONS, OPTIMIZERS
    assert list(APPROXIMATIONS) == list(OPTIMIZERS) == registry.curvature_method_names()
    for name in registry.curvature_method_names():
        entry = registry.get_method(name)
        assert entry.approximation_class().name == name
        assert entry.optimizer_class().approximation_class.name == name
        # a method's own options are said by its class alone (the entry reads them from it), and
        # kfac_bench/options.py documents each (own=True fields)
        assert set(entry.extra_options) <= set(option_names(CurvatureOptions, own=True))
        assert set(entry.tuned()) == {"curves", "mnist", "faces"}    # conf/optimizer/<name>.yaml exists
    assert registry.get_method("sgd").optimizer_class() is torch.optim.SGD


def test_every_method_specific_option_belongs_to_a_method():
    owned = {k for name in registry.curvature_method_names() for k in registry.get_method(name).extra_options}
    assert owned == set(option_names(CurvatureOptions, own=True))


def test_registry_imports_nothing_heavy():
    code = "import sys, kfac_bench.registry as r; r.method_names(); print('torch' in sys.modules, 'omegaconf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------- the approximation
@pytest.mark.parametrize("route", ["direct", "gram"])
def test_rank_k_is_the_dense_optimum(route):
    """||F - F_k||_F equals the optimum sqrt(sum_{i>k} sigma_i^2) of the dense zigzag SVD, and F_k
    is the dense best rank-k itself (d_a != d_g, so a transposed index shows)."""
    abar, g = random_stats(40, 4, 3, seed=21)                  # d_a = 5, d_g = 3
    f = dense_fisher(abar, g)
    block = SampledFisherBlock(abar, g)
    ref = FisherReference.from_block(block, zigzag_sigmas=5)
    for k in range(1, 6):
        fit = make_approximation("lanczos_k", k=k, tol=1e-13, max_restarts=500, route=route).fit(block)
        assert fit.converged and fit.approximation.rank == k
        best, s = best_rank_r_of_zigzag(f, 5, 3, k)
        optimum = float(torch.sqrt(torch.sum(s[k:] ** 2)))
        residual = float(torch.linalg.norm(f - fit.approximation.to_dense()))
        assert residual == pytest.approx(optimum, rel=1e-8, abs=1e-12 * float(torch.linalg.norm(f)))
        assert torch.allclose(fit.approximation.to_dense(), best, atol=1e-9 * float(torch.linalg.norm(f)))
        assert fit.sigmas == pytest.approx(s[:k].tolist(), rel=1e-9)
        assert ref.optimal_error(k) == pytest.approx(optimum / float(torch.linalg.norm(f)), rel=1e-8)
    with pytest.raises(ValueError, match="fewer than rank 6"):
        ref.optimal_error(6)


def test_rank_1_and_2_reproduce_kpsvd_and_lanczos():
    abar, g = random_stats(30, 3, 4, seed=22)
    abar2, g2 = random_stats(30, 3, 4, seed=23)
    b1, b2 = SampledFisherBlock(abar, g), SampledFisherBlock(abar2, g2)
    for k, paper in ((1, KPSVD(tol=1e-13, max_iter=50000)), (2, Lanczos(tol=1e-13))):
        new = LanczosK(k=k, tol=1e-13)
        # a first fit, then a moving-average fit warm-started from it, as in the optimizer
        ours, theirs = new.fit(b1, warm={}), paper.fit(b1, warm={})
        ours2 = new.fit(b2, ours.approximation, 0.5, {}).approximation
        theirs2 = paper.fit(b2, theirs.approximation, 0.5, {}).approximation
        for x, y in ((ours.approximation, theirs.approximation), (ours2, theirs2)):
            scale = float(torch.linalg.norm(y.to_dense()))
            assert torch.allclose(x.to_dense(), y.to_dense(), atol=1e-9 * scale)
            # and the damped solves agree (the rank-k path's closed form for k <= 2)
            inv_new = new.damped_inverse(x, 1e-2)
            inv_old = paper.damped_inverse(y, 1e-2)
            rhs = torch.randn(4, 4, generator=torch.Generator().manual_seed(k), dtype=DT)
            assert torch.allclose(inv_new.solve(rhs), inv_old.solve(rhs), rtol=1e-7, atol=1e-12)
    # rank 2 is Lanczos itself: same code, same Krylov dimension, identical factors
    a = LanczosK(k=2).fit(b1).approximation
    b = Lanczos().fit(b1).approximation
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a.terms, b.terms))


# ----------------------------------------------------------------------------- the damped solve
def _dense_damped(approx: KroneckerSum, damping: float) -> torch.Tensor:
    (a, g), rest = approx.terms[0], approx.terms[1:]
    a_d, g_d = damped_first_term(a, g, damping)
    return torch.kron(a_d, g_d) + sum((torch.kron(c, d) for c, d in rest), torch.zeros(1, dtype=DT))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_rank_k_solve_equals_the_dense_damped_solve(k):
    abar, g = random_stats(40, 4, 3, seed=24)
    approx = LanczosK(k=k, tol=1e-13).fit(SampledFisherBlock(abar, g)).approximation
    damping = 1e-1
    dense = _dense_damped(approx, damping)
    assert float(torch.linalg.eigvalsh(dense).min()) > 0          # a positive definite test problem
    inv = LanczosK(k=k).damped_inverse(approx, damping, psd_floor=1e-12)
    assert inv.clamped == 0
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(k), dtype=DT)
    expected = torch.linalg.solve(dense, vec(x))
    got = vec(inv.solve(x))
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12 * float(expected.abs().max()))
    assert inv.negative_curvature == 0 and inv.iterations <= inv.max_iter
    assert torch.allclose(inv.dense_inverse() @ dense, torch.eye(15, dtype=DT), atol=1e-8)
    # the same through the rank-agnostic helper and through a checkpoint state
    assert torch.allclose(vec(damped_inverse(approx, damping, psd_floor=1e-12).solve(x)), expected, rtol=1e-9)
    restored = LanczosK(k=k).inverse_from_state(inv.state())
    assert torch.allclose(vec(restored.solve(x)), expected, rtol=1e-9)


def test_cg_tolerance_and_cap_are_honoured():
    abar, g = random_stats(40, 4, 3, seed=25)
    approx = LanczosK(k=4, tol=1e-13).fit(SampledFisherBlock(abar, g)).approximation
    dense = _dense_damped(approx, 1e-2)
    b = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
    loose = KroneckerSumInverse.build(approx, 1e-2, psd_floor=1e-12, cg_tol=1e-3)
    x = loose.solve(b)
    # the residual is measured in the eigen-trick coordinates, K^T (M x - b), K = K1 (x) K2
    k = torch.kron(loose.leading.k1, loose.leading.k2)
    residual = float(torch.linalg.norm(k.T @ (dense @ vec(x) - vec(b))))
    assert residual <= 1e-3 * float(torch.linalg.norm(k.T @ vec(b))) * (1 + 1e-6)
    assert 1 <= loose.iterations < KroneckerSumInverse.build(approx, 1e-2, psd_floor=1e-12).max_iter
    capped = KroneckerSumInverse.build(approx, 1e-2, psd_floor=1e-12, cg_tol=1e-30, cg_max_iter=2)
    capped.solve(b)
    assert capped.iterations == 2


def test_indefinite_sum_stops_at_negative_curvature_with_a_finite_answer():
    eye3, eye2 = torch.eye(3, dtype=DT), torch.eye(2, dtype=DT)
    # the third term cancels the damped first one on some directions: M is indefinite
    approx = KroneckerSum([(eye3, eye2), (0.1 * eye3, eye2), (-5.0 * eye3, eye2)])
    inv = KroneckerSumInverse.build(approx, 1e-2, psd_floor=1e-12)
    b = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    x = inv.solve(b)
    assert torch.isfinite(x).all() and inv.negative_curvature == 1
    # stopped at once: the preconditioner's answer, the closed-form solve of the first two terms
    two = leading_damped_inverse(KroneckerSum(approx.terms[:2]), 1e-2, psd_floor=1e-12)
    assert torch.allclose(x, two.solve(b))


# ---------------------------------------------------------------------- block and optimizer
def test_curvature_block_lifecycle_and_state_round_trip():
    abar, g = random_stats(30, 3, 4, seed=26)
    block = CurvatureBlock(LanczosK(k=3, tol=1e-12))
    fit, accepted = block.update(SampledFisherBlock(abar, g), rho=0.0)
    assert accepted and block.rank == 3 and block.updates == 1 and block.approximation is fit.approximation
    grad = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert block.solve(grad) is grad                              # no inverse yet: the plain gradient
    block.invert(1e-1, psd_floor=1e-12)
    expected = torch.linalg.solve(_dense_damped(block.approximation, 1e-1), vec(grad))
    assert torch.allclose(vec(block.solve(grad)), expected, rtol=1e-9)
    block.bare_products(grad)()                                   # runs, returns nothing
    copy = CurvatureBlock(LanczosK(k=3))
    copy.load_state(block.state(), dtype=DT)
    assert copy.updates == 1 and set(copy.warm) == {"v1", "v2", "v3"}
    assert torch.allclose(copy.solve(grad), block.solve(grad))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 6))


@pytest.mark.parametrize("k", [3, 4])
def test_rank_k_optimizer_trains_and_checkpoints(k):
    from kfac_bench.optim import LanczosK as LanczosKOptimizer
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(3))
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def run(model, opt, steps):
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(x), x)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    options = dict(lr=0.1, damping=1e-2, T1=2, T2=2, k=k, seed=1)
    model = _tiny_model()
    opt = LanczosKOptimizer(model, **options)
    losses = run(model, opt, 30)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.95 * losses[0]
    assert all(b.rank == k for b in opt.blocks) and opt.skipped_updates == 0
    # the checkpoint round trip of the curvature (interrupted-and-resumed runs: tests/test_resume.py)
    restored = LanczosKOptimizer(_tiny_model(), **options)
    restored.load_state_dict(opt.state_dict())
    assert restored.steps == opt.steps and [b.updates for b in restored.blocks] == [b.updates for b in opt.blocks]
    grad = torch.randn(4, 7, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(restored.blocks[0].solve(grad), opt.blocks[0].solve(grad))
    with pytest.raises(TypeError, match="takes no option"):
        LanczosKOptimizer(_tiny_model(), lr=0.1, krylov=3)


def test_factory_builds_rank_k_and_validates_the_rank():
    from kfac_bench.optim.factory import build_optimizer, validate_optimizer_config
    model = _tiny_model()
    opt = build_optimizer({"name": "lanczos_k", "lr": 0.1, "damping": 0.01, "k": 4, "cg_tol": 1e-4,
                           "cg_max_iter": 7}, model, "bernoulli")
    assert opt.method.rank == 4 and opt.method.cg_tol == 1e-4 and opt.method.cg_max_iter == 7
    assert opt.method.krylov_dim == 10                           # max(6, 2k + 2)
    with pytest.raises(ValueError, match="optimizer.k"):
        validate_optimizer_config({"name": "lanczos_k", "lr": 0.1, "damping": 0.01, "k": 0})


def test_timing_callback_and_update_request_are_public_hooks():
    from kfac_bench.optim import LanczosK as LanczosKOptimizer
    model = _tiny_model()
    opt = LanczosKOptimizer(model, lr=0.1, T1=100, T2=100, k=3)
    events = []
    opt.add_timing_callback(lambda phase, layer, seconds: events.append((phase, layer)))
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(4))
    for step in range(3):
        if step == 2:
            opt.request_curvature_update()
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), x).backward()
        opt.step()
    fits = [e for e in events if e[0] == "fit"]
    assert fits == [("fit", 0), ("fit", 1)] * 2                  # step 0 (schedule) and step 2 (request)
    assert [e for e in events if e[0] == "layer_inverse"] == [("layer_inverse", 0), ("layer_inverse", 1)] * 2
    assert opt.steps == 3 and all(b.updates == 2 for b in opt.blocks)


# --------------------------------------------------------------------- Figure 1: error vs rank
def test_fisher_study_reports_error_vs_rank(tmp_path):
    from test_fisher_study import tiny_cfg
    from kfac_bench.studies.fisher import run_fisher_study
    out = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, points=2, ranks=4)
    run_fisher_study(cfg, out)
    table = pd.read_csv(out / "fisher_rank_errors.csv")
    assert list(table["rank"]) == [1, 2, 3, 4] * 2 and set(table["method"]) == {"lanczos_k"}
    assert table[["error_frobenius", "error_spectrum", "error_frobenius_optimal"]].notna().all().all()
    for _, point in table.groupby("iteration"):
        e1, opt = point["error_frobenius"].to_numpy(), point["error_frobenius_optimal"].to_numpy()
        assert (opt - 1e-6 <= e1).all() and (e1 <= opt + 1e-3).all()     # Theorem 3.1 at every rank
        assert (e1[1:] <= e1[:-1] + 1e-6).all()                           # more rank, less error
    # rank 1 and 2 match KPSVD and Lanczos of the main table on the same blocks
    main = pd.read_csv(out / "fisher_errors.csv")
    for k, name in ((1, "kpsvd"), (2, "lanczos")):
        a = table[table["rank"] == k].set_index("iteration")["error_frobenius"]
        b = main[main["method"] == name].set_index("iteration")["error_frobenius"]
        assert a.to_numpy() == pytest.approx(b.to_numpy(), abs=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["ranks"]) == {"1", "2", "3", "4"}
    assert (out / "figure1_rank.png").stat().st_size > 1000


def test_error_vs_rank_figure_with_costs(tmp_path):
    from kfac_bench.report.rank import plot_error_vs_rank, rank_costs
    rank_df = pd.DataFrame({"iteration": [1] * 3 + [2] * 3, "layer": 5, "rank": [1, 2, 3] * 2,
                            "error_frobenius": [0.5, 0.3, 0.2, 0.4, 0.25, 0.15],
                            "error_spectrum": [0.3, 0.2, 0.1, 0.3, 0.2, 0.1],
                            "error_frobenius_optimal": [0.5, 0.3, 0.2, 0.4, 0.25, 0.15]})
    bench = pd.DataFrame({"dataset": "mnist", "method": ["kfac", "lanczos_k", "lanczos_k", "lanczos_k"],
                          "rank": [1, 1, 2, 3], "ratio_kfac": [1.0, 1.1, 1.2, 1.5]})
    costs, unit = rank_costs(bench, "mnist")
    assert costs == {1: 1.1, 2: 1.2, 3: 1.5} and unit == "x KFAC"
    written = plot_error_vs_rank(rank_df, tmp_path / "r", "t", costs=costs, cost_unit=unit, formats=("png",))
    assert written[0].stat().st_size > 1000
