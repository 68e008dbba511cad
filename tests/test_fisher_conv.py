"""Figure 1 on convolutional layers (issue 32, item 5): every method fitted to the block of each spatial
treatment and measured against the EXACT block, checked against dense float64 oracles whose
per-example gradients come from torch.func (functional_call + vmap + grad), not from the captures;
the study's table on a conv model (a row per layer, method and treatment) and on an MLP (unchanged)."""
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from kfac_bench.curvature import get_likelihood
from kfac_bench.curvature.capture import layers_of_kind
from kfac_bench.models import build_conv_autoencoder, build_mlp
from kfac_bench.registry import make_approximation
from kfac_bench.studies.fisher import run_fisher_study
from kfac_bench.studies.fisher_layers import evaluate_point, exact_zigzag_singular_values, study_captures

DT = torch.float64
N, SEED = 5, 7
METHODS = ["kfac", "kpsvd", "deflation", "ekfac"]
TREATMENTS = ("independent", "exact")


def tiny_cnn():
    """1x6x6 images: Conv2d 1->2 k3 (T 16), Conv2d 2->3 k3 (T 4), ConvTranspose2d 3->2 k3 (4 input
    positions), ConvTranspose2d 2->1 k3 (16)."""
    model = build_conv_autoencoder(image_shape=(1, 6, 6), channels=(2, 3), kernel_size=3, seed=3).to(DT)
    x = torch.rand(N, 36, generator=torch.Generator().manual_seed(1), dtype=DT)
    return model, x


def targets(model, x, lik):
    """The targets evaluate_point samples with ``Generator().manual_seed(SEED)``."""
    with torch.no_grad():
        return lik.sample(model(x), torch.Generator().manual_seed(SEED))


def oracle_gradients(model, x, y, lik) -> dict[str, torch.Tensor]:
    """``name -> (N, d_g, d_a)`` per-example weight gradients by torch.func (a Conv2d's bias the last
    column; a ConvTranspose2d's weight ``(c_in, c_out k k)``, its bias apart)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xn, yn):
        return lik.per_example_loss(functional_call(model, p, (xn[None],)), yn[None], "mean").sum()
    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            out[name] = grads[f"{name}.weight"].reshape(N, module.weight.shape[0], -1)
        elif isinstance(module, torch.nn.Conv2d):
            w = grads[f"{name}.weight"].reshape(N, module.weight.shape[0], -1)
            out[name] = torch.cat([w, grads[f"{name}.bias"][:, :, None]], dim=2)
    return out


def dense_fisher(dw: torch.Tensor) -> torch.Tensor:
    """``(1/N) sum_n vec(DW_n) vec(DW_n)^T``, ``vec`` stacking columns (a-major)."""
    j = dw.mT.reshape(dw.shape[0], -1)
    return j.mT @ j / dw.shape[0]


def kfc_factors(model, x, y, lik) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """KFC's factors from F.unfold of the recorded tensors: ``A = mean_nt a a^T``, ``G = (1/N) sum_nt
    g g^T`` (a Conv2d: unfolded input patches with a ones column, output gradients; a ConvTranspose2d:
    the unfolded output gradient and the input's channel vectors, over the input positions)."""
    seen = {}
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0], o))) for n, m in modules.items()]
    loss = lik.per_example_loss(model(x), y, "mean").sum()
    for h in hooks:
        h.remove()
    outs = torch.autograd.grad(loss, [seen[n][1] for n in modules])
    factors = {}
    for (name, module), go in zip(modules.items(), outs):
        inp = seen[name][0].detach()
        if isinstance(module, torch.nn.ConvTranspose2d):
            a = F.unfold(go, module.kernel_size).transpose(1, 2)
            g = inp.flatten(2).transpose(1, 2)
        else:
            a = F.unfold(inp, module.kernel_size).transpose(1, 2)
            a = torch.cat([a, torch.ones_like(a[..., :1])], dim=2)
            g = go.flatten(2).transpose(1, 2)
        a, g = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
        factors[name] = (a.mT @ a / a.shape[0], g.mT @ g / N)
    return factors


def zigzag(f: torch.Tensor, d_a: int, d_g: int) -> torch.Tensor:
    """``Z(F)[(a, b), (g, h)] = F[(a, g), (b, h)]``: ``Z(A (x) G) = vec(A) vec(G)^T``."""
    return f.reshape(d_a, d_g, d_a, d_g).permute(0, 2, 1, 3).reshape(d_a * d_a, d_g * d_g)


def test_errors_against_the_exact_block_match_dense_oracles():
    model, x = tiny_cnn()
    lik = get_likelihood("bernoulli")
    y = targets(model, x, lik)
    captures = study_captures(model)
    assert [c.kind for c in captures] == ["conv2d", "conv2d", "conv_transpose2d", "conv_transpose2d"]
    rows, _ = evaluate_point(
        model, captures, [1, 2, 3, 4], x, lik, torch.Generator().manual_seed(SEED), "mean",
        {m: make_approximation(m, tol=1e-13, max_iter=5000) for m in METHODS},
        {(m, layer, t): {} for m in METHODS for layer in range(1, 5) for t in TREATMENTS},
        spectrum=True, spectrum_max_n=None, spectrum_opts={"solver": "dense"}, optimal=True,
        device=torch.device("cpu"), treatments=TREATMENTS)
    table = pd.DataFrame(rows).set_index(["layer", "spatial", "method"])
    assert len(table) == 4 * len(METHODS) * len(TREATMENTS)
    dws, kfc = oracle_gradients(model, x, y, lik), kfc_factors(model, x, y, lik)
    for layer, capture in enumerate(captures, 1):
        dw = dws[capture.path]
        d_g, d_a = dw.shape[1:]
        f = dense_fisher(dw)
        norm = torch.linalg.matrix_norm(f)
        assert table.loc[(layer, "exact", "kfac"), "fisher_norm"] == pytest.approx(float(norm), rel=1e-10)
        # KFAC (KFC's factors, the independent block's) against the exact block
        a, g = kfc[capture.path]
        kfac = float(torch.linalg.matrix_norm(f - torch.kron(a, g)) / norm)
        for t in TREATMENTS:
            assert table.loc[(layer, t, "kfac"), "error_frobenius"] == pytest.approx(kfac, rel=1e-9, abs=1e-12)
        # KPSVD fitted to the exact block = the dense optimum (SVD of the rearranged exact block)
        sigma = torch.linalg.svdvals(zigzag(f, d_a, d_g))
        best1 = math.sqrt(max(float(norm ** 2 - sigma[0] ** 2), 0.0)) / float(norm)
        assert table.loc[(layer, "exact", "kpsvd"), "error_frobenius"] == pytest.approx(best1, abs=1e-7)
        assert table.loc[(layer, "exact", "kpsvd"), "optimal_rank1"] == pytest.approx(best1, abs=1e-9)
        # the rank-2 optimum over symmetric factors: Z(F) on the symmetrised columns
        z = zigzag(f, d_a, d_g).reshape(d_a * d_a, d_g, d_g)
        sym = torch.linalg.svdvals((0.5 * (z + z.transpose(1, 2))).reshape(d_a * d_a, -1))
        assert float(sym[0]) == pytest.approx(float(sigma[0]), rel=1e-12)       # the leading pair is symmetric
        best2 = math.sqrt(max(float(norm ** 2 - sym[0] ** 2 - sym[1] ** 2), 0.0)) / float(norm)
        assert table.loc[(layer, "exact", "kfac"), "optimal_rank2"] == pytest.approx(best2, abs=1e-9)
        assert table.loc[(layer, "exact", "deflation"), "error_frobenius"] == pytest.approx(best2, abs=1e-6)
        # KPSVD fitted to the independent block: its own dense error against the exact block
        assert table.loc[(layer, "independent", "kpsvd"), "error_frobenius"] >= best1 - 1e-9
        # EKFAC with its scaling measured on the exact block: the projection, never above KFAC
        assert table.loc[(layer, "exact", "ekfac"), "error_frobenius"] <= kfac * (1 + 1e-9)
        # Error 2 against the dense spectra, for KFAC (a Kronecker product: eigenvalues of the factors)
        lam, mu = torch.linalg.eigvalsh(f).flip(0), torch.linalg.eigvalsh(torch.kron(a, g)).flip(0)
        err2 = float(torch.linalg.vector_norm(lam - mu) / torch.linalg.vector_norm(lam))
        assert table.loc[(layer, "independent", "kfac"), "error_spectrum"] == pytest.approx(err2, rel=1e-7)


def test_dense_zigzag_route_agrees_with_the_gram_route_and_the_exact_block():
    """On an exact block of one position (rank-one rows) the dense route's singular values are the
    metrics' Gram route's."""
    from kfac_bench.curvature import SampledFisherBlock, spatial_block
    from kfac_bench.curvature.metrics import zigzag_singular_values
    gen = torch.Generator().manual_seed(0)
    abar, g = torch.randn(9, 1, 4, generator=gen, dtype=DT), torch.randn(9, 1, 3, generator=gen, dtype=DT)
    dense = exact_zigzag_singular_values(spatial_block(abar, g, "exact"), 3)
    gram = zigzag_singular_values(SampledFisherBlock(abar[:, 0], g[:, 0]), 3)
    assert torch.allclose(dense, gram, rtol=1e-10, atol=1e-12)
    assert exact_zigzag_singular_values(spatial_block(abar, g, "exact"), 3, max_n=11) is None


def conv_cfg(tmp_path, **fisher):
    from test_fisher_study import tiny_cfg
    cfg = tiny_cfg(tmp_path, points=2, ranks=2, **fisher)
    cfg["dataset"]["model"] = {"kind": "conv_autoencoder", "image_shape": [1, 28, 28], "channels": [2, 2]}
    return cfg


def no_figures(monkeypatch) -> dict:
    """The study's figures recorded, not drawn (test_plot_figure1_one_row_per_layer_and_treatment draws;
    matplotlib is slow): ``{"figure1": its table, "rank": its table}``."""
    import kfac_bench.report.figure1 as figure1
    import kfac_bench.report.rank as rank_figure
    drawn = {}

    def record(key):
        def plot(df, stem, title):
            drawn[key] = df
            return []
        return plot
    monkeypatch.setattr(figure1, "plot_figure1", record("figure1"))
    monkeypatch.setattr(rank_figure, "plot_error_vs_rank", record("rank"))
    return drawn


def test_conv_study_rows_per_layer_method_and_treatment(tmp_path, monkeypatch):
    drawn = no_figures(monkeypatch)
    out = tmp_path / "run"
    df = run_fisher_study(conv_cfg(tmp_path, methods=["kfac", "kpsvd", "ekfac"], layer=[2, 3]), out)
    table = pd.read_csv(out / "fisher_errors.csv")
    assert len(table) == len(df) == 2 * 2 * 3 * 2       # points x layers x methods x treatments
    assert list(table.columns[:4]) == ["iteration", "layer", "method", "spatial"]
    counts = table.groupby(["iteration", "layer", "method", "spatial"]).size()
    assert (counts == 1).all() and set(table["spatial"]) == set(TREATMENTS)
    assert table[["error_frobenius", "error_spectrum", "optimal_rank1", "optimal_rank2"]].notna().all().all()
    by = table.set_index(["iteration", "layer", "spatial", "method"]).sort_index()
    for (iteration, layer), _ in table.groupby(["iteration", "layer"]):
        kfac = by.loc[(iteration, layer)].xs("kfac", level="method")["error_frobenius"]
        assert kfac["independent"] == pytest.approx(kfac["exact"], rel=1e-5)   # KFC's factors under both
        kpsvd = by.loc[(iteration, layer, "exact", "kpsvd")]
        assert kpsvd["error_frobenius"] == pytest.approx(kpsvd["optimal_rank1"], abs=1e-4)
    rank = pd.read_csv(out / "fisher_rank_errors.csv")
    assert len(rank) == 2 * 2 * 2 * 2 and set(rank["spatial"]) == set(TREATMENTS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == [2, 3] and summary["spatial_treatments"] == list(TREATMENTS)
    layer2 = summary["spatial"]["2"]
    rows = table[table["layer"] == 2]
    mean = lambda t, m: rows[(rows["spatial"] == t) & (rows["method"] == m)]["error_frobenius"].mean()  # noqa: E731
    assert layer2["treatments"]["exact"]["methods"]["kpsvd"]["error_frobenius_mean"] == pytest.approx(mean("exact", "kpsvd"))
    dec = layer2["decomposition"]
    assert dec["kfac_error_frobenius_independent"] == pytest.approx(mean("independent", "kfac"))
    assert dec["kronecker_floor_error_frobenius"] == pytest.approx(rows.drop_duplicates("iteration")["optimal_rank1"].mean())
    assert dec["removed_by_fitting_exact"]["independent"]["kpsvd"]["error_frobenius"] == pytest.approx(
        mean("independent", "kpsvd") - mean("exact", "kpsvd"))
    assert set(summary["methods"]) == {"kfac", "kpsvd", "ekfac"}          # the first treatment's rows
    assert len(drawn["figure1"]) == len(table) and set(drawn["rank"]["layer"]) == {
        f"{layer} ({t})" for layer in (2, 3) for t in TREATMENTS}            # a row of rank panels per treatment


def test_plot_figure1_one_row_per_layer_and_treatment(tmp_path):
    from kfac_bench.report.figure1 import _panel_rows, plot_figure1
    rows = [{"iteration": i, "layer": layer, "method": m, "spatial": t, "error_frobenius": 0.1 * (1 + i),
             "error_spectrum": 0.01 * (1 + i), "optimal_rank1": 0.05}
            for i in range(3) for layer, ts in ((1, TREATMENTS), (2, ("none",))) for t in ts for m in ("kfac", "kpsvd")]
    df = pd.DataFrame(rows)
    assert [(layer, t) for layer, t, _ in _panel_rows(df)] == [(1, "independent"), (1, "exact"), (2, None)]
    paths = plot_figure1(df[df["layer"] == 1], tmp_path / "f", "t", formats=("png",), dpi=50)
    assert paths[0].stat().st_size > 1000


def test_mlp_layers_and_rows_are_as_before(tmp_path, monkeypatch):
    no_figures(monkeypatch)
    model = build_mlp([12, 8, 6, 8, 12], "relu", torch.Generator().manual_seed(0))
    captures = study_captures(model)
    assert [c.module for c in captures] == layers_of_kind(model, "linear")
    out = tmp_path / "run"
    from test_fisher_study import tiny_cfg
    table = run_fisher_study(tiny_cfg(tmp_path, points=2, ranks=0, methods=["kfac", "kpsvd"]), out)
    assert set(table["layer"]) == {5} and set(table["spatial"]) == {"none"} and len(table) == 2 * 2
    assert "spatial" not in json.loads((out / "summary.json").read_text())
    kpsvd = table[table["method"] == "kpsvd"]
    assert (kpsvd["error_frobenius"] - kpsvd["optimal_rank1"]).abs().max() < 1e-4
    assert (kpsvd["optimal_rank1"] == kpsvd["error_frobenius_optimal"]).all()


def test_layer_auto_is_the_paper_s_for_an_mlp_and_all_for_a_cnn():
    from kfac_bench.studies.fisher import _default_layer, resolve_layers
    cnn, _ = tiny_cnn()
    mlp = build_mlp([12, 8, 6, 8, 12], "relu", torch.Generator().manual_seed(0))
    assert resolve_layers(_default_layer("auto", study_captures(cnn)), 4) == [1, 2, 3, 4]
    assert _default_layer("auto", study_captures(mlp)) == 5 and _default_layer([2], study_captures(cnn)) == [2]


def test_invalid_spatial_options(tmp_path):
    for bad in ([], ["sideways"], "nope"):
        with pytest.raises(ValueError, match="fisher.spatial"):
            run_fisher_study(conv_cfg(tmp_path, spatial=bad), tmp_path / "run")
    with pytest.raises(ValueError, match="fisher.spatial_radius"):
        run_fisher_study(conv_cfg(tmp_path, spatial_radius=-1), tmp_path / "run")
