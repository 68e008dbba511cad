"""The layers of the Figure 1 study (:mod:`kfac_bench.studies.fisher`) and one evaluation point:
which layers, their blocks under each spatial treatment, the exact reference, every method's fit and
errors as table rows, and the per-layer, per-treatment summary of the convolutional layers.

Layers (``fisher.layer``) are the model's preconditioned layers in module order, one per module: the
first capture of each module that has one (:func:`study_captures`: an ``nn.Linear``, an ``nn.Conv2d``,
an ``nn.ConvTranspose2d``'s weight). The MLP auto-encoders' layers are their ``nn.Linear`` layers,
numbered as before. A ConvTranspose2d's bias is a block of its own (``c_out x 1``, one position,
``ConvTranspose2dBiasCapture``) that every method fits exactly (Error 0): it is left out.

A weight-sharing layer (a convolution) has its per-position statistics ``(abar (N, T, d_a), g (N, T,
d_g))`` captured once per point (:class:`PositionStatistics`). The reference is ALWAYS the exact block
``spatial_block(abar, g, "exact")``, ``F = (1/N) sum_n vec(DW_n) vec(DW_n)^T`` with ``DW_n`` the
example's weight gradient summed over positions; every method is fitted to the block of each treatment
of ``fisher.spatial`` (``independent``: KFC's ``N T`` position rows; ``reduce``; ``exact``; ``banded``:
the authors' band of radius ``fisher.spatial_radius``, default ``min(kernel) - 1``) and measured
against that exact reference. A Linear layer has one block, reference and fitted alike: its rows say
``spatial = none``.

Theorem 3.1's optimum against the exact block (:func:`exact_zigzag_singular_values`):
:func:`~kfac_bench.curvature.metrics.zigzag_singular_values` needs one rank-one term per row, which
the exact block has not. Its rearrangement is ``Z(F) = (1/N) sum_n DW_n^T (x) DW_n^T`` (``d_a^2 x
d_g^2``), formed densely from the per-example gradients up to ``n = d_a d_g <= ZIGZAG_DENSE_MAX_N``
(NaN beyond, with a warning). ``Z(F)`` maps symmetric matrices to symmetric ones and skew to skew; the
approximations fit symmetric factors (:class:`~kfac_bench.curvature.spatial.SpatialFisherBlock`), so
the optimum is over symmetric factors: the singular values of ``Z(F)`` on the symmetric matrices.
The leading one is ``Z(F)``'s own on the tiny conv layers of tests/test_fisher_conv.py (dense SVD of
the rearranged block); so the rank-1 optimum is Theorem 3.1's, the error no Kronecker product removes.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ..curvature import collect_statistics, spatial_block
from ..curvature.capture import Capture, captures_for
from ..curvature.metrics import FisherReference, fisher_error
from ..registry import METHODS
from ..utils import synchronize

log = logging.getLogger("kfac_bench.fisher")

NO_SPATIAL = "none"            # the spatial column of a layer without positions (nn.Linear)
EXACT, INDEPENDENT = "exact", "independent"
RANK_METHOD = "lanczos_k"      # the registry's method of any Kronecker rank
ZIGZAG_DENSE_MAX_N = 5000      # exact block's optimum: Z(F) has n^2 entries (5000: 200 MB in float64)


# ------------------------------------------------------------------------------------------ layers
def study_captures(model: torch.nn.Module, radius: int | None = None) -> list[Capture]:
    """The model's preconditioned layers in module order: each module's first capture (the ConvTranspose2d
    bias block is left out, module docstring). ``radius``: the band of ``spatial=banded``."""
    out = []
    for path, module in model.named_modules():
        found = captures_for(module, path, radius=radius)
        if found:
            out.append(found[0])
    return out


def has_positions(capture: Capture) -> bool:
    """Whether the layer shares its weights over positions (its capture gives per-position statistics)."""
    return hasattr(capture, "position_statistics")


def describe(capture: Capture) -> str:
    d_g, d_a = capture.block_shape
    return f"{capture.kind} {capture.path!r} (d_g {d_g}, d_a {d_a})"


class PositionStatistics(Capture):
    """A weight-sharing layer's capture whose statistics are the raw per-position ``(abar, g)``
    (:meth:`Conv2dCapture.position_statistics`): the blocks of every treatment are built from them."""

    def __init__(self, inner: Capture):
        super().__init__(inner.module, inner.path)
        self.inner = inner

    @property
    def parameters(self):
        return self.inner.parameters

    @property
    def block_shape(self):
        return self.inner.block_shape

    def statistics(self, inputs, grad_output):
        return self.inner.position_statistics(inputs, grad_output)


def layer_blocks(capture: Capture, stats, treatments) -> tuple[object, list[tuple[str, object]]]:
    """``(reference block, [(treatment, block fitted)])`` of one layer from its collected statistics."""
    if not has_positions(capture):
        return stats, [(NO_SPATIAL, stats)]
    abar, g = stats
    exact = spatial_block(abar, g, EXACT)
    return exact, [(t, exact if t == EXACT else spatial_block(abar, g, t, capture.band_radius()))
                   for t in treatments]


# ------------------------------------------------------------------------------- the reference
def exact_zigzag_singular_values(block, k: int | None = None,
                                 max_n: int = ZIGZAG_DENSE_MAX_N) -> torch.Tensor | None:
    """Singular values of ``Z(F)`` on the symmetric matrices (decreasing, float64) for an exact
    :class:`~kfac_bench.curvature.spatial.SpatialFisherBlock` (module docstring); None when
    ``d_a d_g > max_n``. ``Z[(a, b), (g, h)] = (1/N) sum_n DW_n[g, a] DW_n[h, b]``; the columns (or rows,
    on the smaller side) are symmetrised, which keeps the symmetric block's singular values and turns
    the skew ones into zeros. ``O(N n^2 + n^2 min(d_a, d_g)^2)``."""
    dw = block.per_example_gradients().to(torch.float64)        # (N, d_g, d_a)
    n_ex, d_g, d_a = dw.shape
    if d_a * d_g > max_n:
        return None
    z = torch.einsum("nga,nhb->abgh", dw, dw) / n_ex
    if d_g <= d_a:
        z = (0.5 * (z + z.transpose(2, 3))).reshape(d_a * d_a, d_g * d_g)
        core = z.mT @ z
    else:
        z = (0.5 * (z + z.transpose(0, 1))).reshape(d_a * d_a, d_g * d_g)
        core = z @ z.mT
    sig2 = torch.linalg.eigvalsh(0.5 * (core + core.mT)).flip(0)
    sig = torch.sqrt(torch.clamp(sig2, min=0.0))
    return sig if k is None else sig[:k]


def build_reference(block, zigzag: int) -> FisherReference:
    """The exact block's :class:`FisherReference` with ``zigzag`` leading singular values of ``Z(F)``
    (0: none): the Gram route of the metrics for a block of rank-one rows, the dense route
    (:func:`exact_zigzag_singular_values`) for a weight-sharing layer's exact block."""
    if getattr(block, "supports_gram_route", False):
        return FisherReference.from_block(block, zigzag_sigmas=zigzag or False)
    ref = FisherReference.from_block(block)
    if zigzag:
        t0 = time.perf_counter()
        sigmas = exact_zigzag_singular_values(ref.block, zigzag)
        if sigmas is None:
            log.warning("exact block with n = %d > %d: no Theorem 3.1 optimum (NaN)",
                        ref.n, ZIGZAG_DENSE_MAX_N)
        else:
            ref.zigzag_sigmas, ref.zigzag_count = sigmas, zigzag
        ref.seconds += time.perf_counter() - t0
    return ref


def optimal_error(ref: FisherReference, rank: int | None) -> float:
    """Theorem 3.1's optimum of Kronecker rank ``rank`` (NaN: no rank, or no singular values)."""
    if rank is None or ref.zigzag_sigmas is None or rank > ref.zigzag_count:
        return float("nan")
    return ref.optimal_error(rank)


# ------------------------------------------------------------------------------ one evaluation point
@dataclass
class _Measure:
    """How the errors are measured at a point (the study's settings)."""

    spectrum: bool
    spectrum_max_n: int | None
    spectrum_opts: dict
    optimal: bool
    device: torch.device

    def fit(self, approx, block, warm):
        synchronize(self.device)
        t0 = time.perf_counter()
        fit = approx.fit(block, warm=warm)
        synchronize(self.device)
        return fit, time.perf_counter() - t0

    def wants_spectrum(self, estimate, n: int) -> bool:
        # a closed-form spectrum (a Kronecker product, EKFAC's diagonal) always; one that needs an
        # eigensolver only on layers up to spectrum_max_n
        return self.spectrum and (not estimate.spectrum_needs_eigensolve or self.spectrum_max_n is None
                                  or n <= int(self.spectrum_max_n))

    def optimum(self, ref, estimate) -> float:
        # Theorem 3.1's optimum of the estimate's Kronecker rank; none for another structure
        return optimal_error(ref, estimate.kronecker_rank) if self.optimal else float("nan")


def _method_row(layer, name, fit, fit_s, err, optimum, metric_s, ref, stats_s, block) -> dict:
    """One method's row of ``fisher_errors.csv`` at an evaluation point (without point_seconds)."""
    # the solvers' singular values belong to the last terms (KFAC-corrected: its correction)
    sigmas = [float("nan")] * (fit.approximation.rank - len(fit.sigmas)) + list(fit.sigmas)
    its = fit.iterations
    return {
        "layer": layer, "method": name,
        "error_frobenius": err["error_frobenius"], "error_spectrum": err["error_spectrum"],
        "error_frobenius_optimal": optimum,
        "seconds": fit_s, "iterations": int(sum(its.values())) if its else 0,
        "iterations_power_1": its.get("power_1", float("nan")),
        "iterations_power_2": its.get("power_2", float("nan")),
        "iterations_lanczos": its.get("lanczos", float("nan")),
        "converged": bool(fit.converged),
        "sigma1": sigmas[0] if len(sigmas) > 0 else float("nan"),
        "sigma2": sigmas[1] if len(sigmas) > 1 else float("nan"),
        "metric_seconds": metric_s, "spectrum_seconds": err["seconds_spectrum"],
        "spectrum_solver": err["spectrum_solver"], "spectrum_iterations": err["spectrum_iterations"],
        "spectrum_converged": bool(err["spectrum_converged"]), "reference_seconds": ref.seconds,
        "stats_seconds": stats_s, "fisher_norm": err["fisher_norm"], "approx_norm": err["approx_norm"],
        "m": block.m, "d_a": block.shape_a, "d_g": block.shape_g,
    }


def _measure_methods(measure: _Measure, layer, block, ref, approximations, warm, stats_s) -> list[dict]:
    """Every method fitted to ``block`` (its solvers' warm dict ``warm[name]``) and measured against ``ref``.

    Warm starts of the spectrum eigensolver: methods whose approximation is the best Kronecker
    approximation of their rank (the registry's ``best_of_rank``: Deflation and Lanczos at rank 2)
    agree to solver tolerance, so the second one reuses the first one's Ritz basis: when both solvers
    converged, one Rayleigh-Ritz step on it is exact to second order in their difference and is all
    the second one costs. Everything else starts cold from the Kronecker eigenvectors of its first
    term: a new mini-batch moves the top eigenvectors so much that the previous point's basis cost
    more steps than a cold start (MNIST layer 5: 5 vs 3)."""
    best_basis: dict[int, dict] = {}       # rank -> the shared basis of the best-of-rank methods
    best_converged: dict[int, bool] = {}
    n = block.shape_a * block.shape_g
    rows = []
    for name, approx in approximations.items():
        fit, fit_s = measure.fit(approx, block, warm[name])
        rank = fit.approximation.rank
        t0 = time.perf_counter()
        same_target = METHODS[name].best_of_rank and rank >= 2
        basis = best_basis.setdefault(rank, {})
        err = fisher_error(ref, fit.approximation, spectrum=measure.wants_spectrum(fit.approximation, n),
                           warm=basis if same_target else None,
                           trust_warm=same_target and best_converged.get(rank, True) and fit.converged,
                           **measure.spectrum_opts)
        if same_target:
            best_converged[rank] = (best_converged.get(rank, True) and bool(fit.converged)
                                    and bool(err["spectrum_converged"]))
        synchronize(measure.device)
        metric_s = time.perf_counter() - t0
        rows.append(_method_row(layer, name, fit, fit_s, err, measure.optimum(ref, fit.approximation), metric_s,
                                ref, stats_s, block))
    return rows


def _measure_ranks(measure: _Measure, layer, block, ref, rank_approximations, warm) -> list[dict]:
    """The error-vs-rank fits: another matrix at every rank; each starts from the previous rank's
    basis (not trusted: refined to ``rtol``)."""
    rank_basis: dict = {}
    rows = []
    n = block.shape_a * block.shape_g
    for k, approx in rank_approximations.items():
        fit, fit_s = measure.fit(approx, block, warm[k])
        t0 = time.perf_counter()
        err = fisher_error(ref, fit.approximation, spectrum=measure.wants_spectrum(fit.approximation, n),
                           warm=rank_basis, **measure.spectrum_opts)
        synchronize(measure.device)
        rows.append({
            "layer": layer, "rank": k, "method": RANK_METHOD,
            "error_frobenius": err["error_frobenius"], "error_spectrum": err["error_spectrum"],
            "error_frobenius_optimal": measure.optimum(ref, fit.approximation),
            "seconds": fit_s, "iterations": int(sum(fit.iterations.values())), "converged": bool(fit.converged),
            "metric_seconds": time.perf_counter() - t0,
        })
    return rows


def evaluate_point(model, captures, layers, x, likelihood, sampler, reduction, approximations, fit_warm,
                   spectrum, spectrum_max_n, spectrum_opts, optimal, device, treatments=(INDEPENDENT, EXACT),
                   rank_approximations=None, rank_warm=None) -> tuple[list[dict], list[dict]]:
    """All methods and metrics at one evaluation point, and the error-vs-rank rows; rows without
    iteration/epoch/loss. ``captures``: :func:`study_captures`; ``layers``: 1-based indices into them;
    ``fit_warm`` / ``rank_warm``: the solvers' warm dicts per ``(method or rank, layer, spatial)``."""
    rank_approximations = rank_approximations or {}
    measure = _Measure(spectrum, spectrum_max_n, spectrum_opts, optimal, device)
    synchronize(device)
    t_point = time.perf_counter()
    chosen = [captures[i - 1] for i in layers]
    stats = collect_statistics(model, [PositionStatistics(c) if has_positions(c) else c for c in chosen], x,
                               likelihood, generator=sampler, reduction=reduction)
    synchronize(device)
    stats_s = time.perf_counter() - t_point
    rows, rank_rows = [], []
    sigmas_needed = max([2] + [approx.rank for approx in approximations.values()] + list(rank_approximations))
    for layer, capture, layer_stats in zip(layers, chosen, stats):
        reference, fitted = layer_blocks(capture, layer_stats, treatments)
        ref = build_reference(reference, sigmas_needed if optimal else 0)
        optima = {"optimal_rank1": optimal_error(ref, 1), "optimal_rank2": optimal_error(ref, 2)}
        for treatment, block in fitted:
            new = _measure_methods(measure, layer, block, ref, approximations,
                                   {name: fit_warm[(name, layer, treatment)] for name in approximations}, stats_s)
            new_ranks = _measure_ranks(measure, layer, block, ref, rank_approximations,
                                       {k: rank_warm[(k, layer, treatment)] for k in rank_approximations})
            for r in new + new_ranks:
                r.update(spatial=treatment, **optima)
            rows += new
            rank_rows += new_ranks
    synchronize(device)
    point_s = time.perf_counter() - t_point
    for r in rows:
        r["point_seconds"] = point_s
    return rows, rank_rows


# ------------------------------------------------------------------------ the convolutional summary
def _mean(series: pd.Series) -> float:
    return float(series.mean()) if len(series) else float("nan")


def summarize_spatial(df: pd.DataFrame, kfac: str) -> dict:
    """Per weight-sharing layer (string keys, JSON) and treatment: the means of Error 1 and Error 2 per
    method, the median fit seconds; the means of the exact block's rank-1 and rank-2 optima; and the
    decomposition of ``kfac``'s Error 1 (issue 32): its value under ``independent``, the part no
    Kronecker product removes (the rank-1 optimum of the exact block) and what fitting each method to
    ``exact`` rather than each other treatment removes (the difference of the means)."""
    out: dict = {}
    conv = df[df["spatial"].astype(str) != NO_SPATIAL]
    for layer, sub in conv.groupby("layer"):
        points = sub.drop_duplicates("iteration")
        entry: dict = {"points": int(len(points)), "optimal_rank1_mean": _mean(points["optimal_rank1"]),
                       "optimal_rank2_mean": _mean(points["optimal_rank2"]), "treatments": {}}
        for treatment, rows in sub.groupby("spatial", sort=False):
            per_point = rows.groupby("iteration")[["seconds", "metric_seconds"]].sum()
            entry["treatments"][str(treatment)] = {
                "fit_seconds_per_point_median": float(per_point["seconds"].median()),
                "metric_seconds_per_point_median": float(per_point["metric_seconds"].median()),
                "methods": {str(m): {"error_frobenius_mean": _mean(r["error_frobenius"]),
                                     "error_spectrum_mean": _mean(r["error_spectrum"]),
                                     "seconds_median": float(r["seconds"].median())}
                            for m, r in rows.groupby("method", sort=False)}}
        entry["decomposition"] = _decomposition(entry, kfac)
        out[str(layer)] = entry
    return out


def _decomposition(entry: dict, kfac: str) -> dict:
    treatments = entry["treatments"]
    floor = entry["optimal_rank1_mean"]
    kfac_error = treatments.get(INDEPENDENT, {}).get("methods", {}).get(kfac, {}).get("error_frobenius_mean")
    out: dict = {"kfac_error_frobenius_independent": kfac_error, "kronecker_floor_error_frobenius": floor,
                 "kronecker_floor_fraction_of_kfac": (floor / kfac_error if kfac_error else None),
                 "removed_by_fitting_exact": {}}
    exact = treatments.get(EXACT, {}).get("methods", {})
    for treatment, values in treatments.items():
        if treatment == EXACT or not exact:
            continue
        out["removed_by_fitting_exact"][treatment] = {
            m: {col: v[f"{col}_mean"] - exact[m][f"{col}_mean"] for col in ("error_frobenius", "error_spectrum")}
            for m, v in values["methods"].items() if m in exact}
    return out


def spatial_table(spatial: dict, describe_layer: dict, kfac: str) -> str:
    """The log's tables of :func:`summarize_spatial`: per layer, the methods' mean Error 1 / Error 2 per
    treatment, the optima and the decomposition of KFAC's Error 1."""
    lines = []
    for layer, entry in spatial.items():
        treatments = list(entry["treatments"])
        lines.append(f"layer {layer}, {describe_layer.get(layer, '')}: means over {entry['points']} points, "
                     "each method fitted to the treatment's block, measured against the exact block")
        lines.append(f"  {'method':15s} " + " ".join(f"{t + ' E1':>16s} {t + ' E2':>16s}" for t in treatments))
        methods = list(dict.fromkeys(m for t in treatments for m in entry["treatments"][t]["methods"]))
        for m in methods:
            cells = [entry["treatments"][t]["methods"].get(m, {}) for t in treatments]
            lines.append(f"  {m:15s} " + " ".join(
                f"{c.get('error_frobenius_mean', float('nan')):16.6f} {c.get('error_spectrum_mean', float('nan')):16.6f}"
                for c in cells))
        lines.append(f"  optimum (exact block): rank 1 {entry['optimal_rank1_mean']:.6f}, "
                     f"rank 2 {entry['optimal_rank2_mean']:.6f}")
        lines.append("  fit seconds per point (median): " + ", ".join(
            f"{t} {entry['treatments'][t]['fit_seconds_per_point_median']:.3f}" for t in treatments))
        dec = entry["decomposition"]
        if dec["kfac_error_frobenius_independent"] is not None:
            lines.append(f"  {kfac} Error 1 under {INDEPENDENT}: {dec['kfac_error_frobenius_independent']:.6f}; the best "
                         f"Kronecker product of the exact block (what none removes): "
                         f"{dec['kronecker_floor_error_frobenius']:.6f}, "
                         f"{100 * (dec['kronecker_floor_fraction_of_kfac'] or math.nan):.1f}% of it")
        for treatment, removed in dec["removed_by_fitting_exact"].items():
            lines.append(f"  Error 1 removed by fitting {EXACT} rather than {treatment}: " + ", ".join(
                f"{m} {v['error_frobenius']:+.6f}" for m, v in removed.items()))
    return "\n".join(lines)
