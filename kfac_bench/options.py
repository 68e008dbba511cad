"""The optimizers' options, each said once: its name, its default in a run and what it does.

One dataclass per family -- :class:`CurvatureOptions` (every Kronecker-factored optimizer),
:class:`SGDOptions`, :class:`AdamOptions` -- and its fields drive

* **the run configs**: the shared parts of ``conf/optimizer/*.yaml`` are Hydra config nodes made
  from these fields (:func:`config_nodes`, registered with Hydra's ConfigStore by
  :func:`register_config_nodes`, which importing :mod:`kfac_bench.cli` calls). A method's YAML names
  the parts it lists -- ``defaults: [_curvature, _power_svd, _self_]`` -- then its name, its tuned
  values and anything it sets otherwise. A field's ``node`` is the part it belongs to: the parts are
  what lets each method's resolved config keep exactly the keys it had (run folders are matched by
  every resolved setting, :mod:`kfac_bench.runs.folder`), so a method lists the solver settings it
  uses and no others. A field with no node (``route``) is an option no config lists: add it with
  ``+optimizer.route=gram``.
* **validation**: a config key that is no option of its method is an error naming the known ones
  (:func:`unknown_option_message`; :func:`kfac_bench.optim.factory.validate_optimizer_config` and
  the command line's own check in :mod:`kfac_bench.cli`).
* **the documented option list**: :func:`markdown` writes the table in ``docs/usage.md``
  (``python -m kfac_bench.options`` prints it; ``tests/test_options.py`` checks the page holds it).

Which *method-specific* options a curvature method takes (``own=True`` fields: the rank of
``lanczos_k``, the second term of Deflation and KFAC-corrected) is said by its approximation class,
``extra_options`` (:mod:`kfac_bench.curvature.approximations`: the mathematics knows what its
constructor reads); this module says what they mean and their defaults.

Imports nothing heavy and nothing of the package: the registry and the command line read it before
torch is loaded.
"""
from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# what a config has besides options: its method and the table of the authors' selected values
STRUCTURAL_KEYS = ("name", "tuned")
_TUNED = "${{.tuned.${{dataset.name}}.{}}}"     # the authors' selected value for the dataset in use
_OWN_CONFIG = "the method's YAML"              # a ``node`` that is no shared part: each config says it


def option(default: Any, doc: str, node: str | None = None, *, config: Any = MISSING, own: bool = False):
    """A field of an options dataclass. ``default``: the optimizer's own default; ``config``: the
    value the run configs give it when that differs (an interpolation); ``node``: the shared config
    part that lists it (None: no config lists it); ``own``: a method-specific option (its
    approximation class's ``extra_options`` says which methods take it)."""
    meta = {"doc": doc, "node": node, "own": own, "config": default if config is MISSING else config}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# The authors' code behaviours: each option defaults to the paper's specification; authors_code=all
# switches on every one (kfac_bench/optim/authors_code.py, docs/authors_code.md).
_AUTHORS = "The authors' code: "


@dataclass(frozen=True)
class CurvatureOptions:
    """The options of every Kronecker-factored optimizer
    (:class:`kfac_bench.optim.KroneckerFactoredOptimizer`'s keywords), plus the method-specific ones."""

    lr: float = option(0.1, "learning rate; in a run, the authors' selected value for the dataset in use "
                            "(the method's `tuned:` table, docs/design.md §6)", "_curvature", config=_TUNED.format("lr"))
    damping: float = option(1e-3, "Tikhonov damping; in a run, the authors' selected value for the dataset "
                                  "in use (`tuned:`)", "_curvature", config=_TUNED.format("damping"))
    kl_clip: float | None = option(1e-2, "KL clip of the step (appendix E, without lr^2: the paper's formula); "
                                         "null disables", "_curvature")
    T1: int = option(100, "statistics and approximation every T1 steps", "_curvature")
    T2: int = option(100, "damped inverses every T2 steps", "_curvature")
    alpha: float = option(0.95, "moving average: rho = min(1 - 1/k, alpha), k = update count", "_curvature")
    momentum: float = option(0.9, "heavy-ball momentum behind the preconditioner (authors' code)", "_curvature")
    weight_decay: float = option(0.0, "weight decay after preconditioning; the authors' code used 1e-3",
                                 "_curvature")
    fisher: str = option("sampled", "sampled = targets drawn from the model (true Fisher); empirical = the "
                                    "real targets", "_curvature")
    stats_fraction: float = option(1.0, "fraction of the batch used for the statistics pass", "_curvature")
    reduction: str = option("mean", "mean = Fisher of the per-element-mean loss (paper); sum = per-case NLL",
                            "_curvature")
    curvature_schedule: str = option("periodic", _AUTHORS + "frozen_after_first = curvature computed at the "
                                                 "first step only", "_curvature")
    damping_convention: str = option("paper", _AUTHORS + "authors = their damped inverses (sqrt(lam)/lam, no "
                                              "pi, |.| eigenvalues)", "_curvature")
    averaging: str = option("fisher", _AUTHORS + "factors = every Kronecker factor averaged on its own",
                            "_curvature")
    stats_sampling: str = option("prefix", _AUTHORS + "with_replacement = stats_fraction of the batch drawn "
                                           "with replacement", "_curvature")
    gaussian_target_std: float | None = option(None, _AUTHORS + "1.0 = FACES Fisher targets with unit variance "
                                                     "(null: the likelihood's sqrt(1/2))", "_curvature")
    kl_clip_terms: str = option("layer", _AUTHORS + "tensor = the KL clip's sum taken per weight and bias "
                                         "tensor (+1e-8)", "_curvature")
    # the solver settings: every curvature optimizer takes them; a config lists those its method uses
    tol: float = option(1e-6, "solver stopping tolerance, relative to sigma_1", "_power_svd")
    max_iter: int = option(1000, "power SVD iteration cap", "_power_svd")
    psd_floor: float = option(0.1, "PSD safeguard of the rank-2 solve (the rank-2 preconditioner of "
                                   "lanczos_k; docs/mathematics.md)", "_psd_floor")
    krylov_dim: int = option(6, "Krylov subspace dimension (thick restart keeps 2 + 1; lanczos_k uses at "
                                "least 2k + 2: the kept k + as many new)", "_krylov")
    max_restarts: int = option(100, "Lanczos restart cap", "_krylov")
    route: str = option("auto", "zigzag route of the SVD methods: auto, direct or gram (docs/mathematics.md; "
                                "KFAC has no solver and ignores it); no config lists it: "
                                "`+optimizer.route=gram`")
    # the convolutional layers (no config lists them, so every existing run's config is as it was)
    spatial: str = option("independent", "treatment of a convolution's positions: independent (KFC / KFAC-expand), "
                                         "reduce (KFAC-reduce), exact, banded (the authors' code; "
                                         "docs/mathematics.md); no config lists it: `+optimizer.spatial=exact`")
    spatial_radius: int | None = option(None, "band of spatial=banded on the flattened position index; null = "
                                              "min(kernel) - 1 per layer (the authors' r)")
    layers: list | None = option(None, "the layers to precondition: kinds (linear, conv, conv2d, conv_transpose2d) "
                                       "or module paths (and what is below them); null = every Linear, Conv2d and "
                                       "ConvTranspose2d; the others take the plain step (`opt.describe_layers()`)")
    # the method-specific options (own=True): their approximation class's extra_options says whose
    second_term: str = option("deflated", _AUTHORS + "leading = the second term is the leading Kronecker "
                                          "term again (Deflation, KFAC-corrected)", "_second_term", own=True)
    k: int = option(3, "Kronecker rank of lanczos_k (any integer >= 1; 2 is lanczos)", "_lanczos_k", own=True)
    cg_tol: float | None = option(None, "CG stopping rule |b - M x| <= cg_tol |b| (lanczos_k); null = 100 eps "
                                        "of the dtype (float32 1.2e-5)", "_lanczos_k", own=True)
    cg_max_iter: int = option(50, "CG iteration cap (lanczos_k)", "_lanczos_k", own=True)
    T_scale: int | str = option(1, "EKFAC's scaling re-estimated every T_scale steps from that minibatch's per-example "
                                   "gradients in the current eigenbasis, averaged with alpha (George et al. 2018, "
                                   "Algorithm 1); T1 = with the statistics every T1 steps, the schedule before "
                                   "issue 33 (ekfac; docs/mathematics.md)", "_ekfac", own=True)


@dataclass(frozen=True)
class SGDOptions:
    """``torch.optim.SGD``'s options in a run (paper 4.2: heavy-ball momentum, beta = 0.9)."""

    lr: float = option(0.3, "learning rate (the authors' selected value)", _OWN_CONFIG)
    momentum: float = option(0.9, "heavy-ball momentum (paper 4.2: 0.9; torch's default is 0)", "_sgd")
    weight_decay: float = option(0.0, "L2 weight decay in the gradient", "_sgd")
    nesterov: bool = option(False, "true = Nesterov momentum (the authors' SGD baseline)", "_sgd")


@dataclass(frozen=True)
class AdamOptions:
    """``torch.optim.Adam``'s options in a run (paper 4.2)."""

    lr: float = option(1e-3, "learning rate (the authors' selected value)", _OWN_CONFIG)
    betas: list = option([0.9, 0.999], "moment decay rates (paper 4.2: (0.9, 0.999))", "_adam")
    weight_decay: float = option(0.0, "L2 weight decay in the gradient", "_adam")


# Today's Kronecker-factored preconditioners from pytorch-optimizer (kfac_bench/optim/baselines.py), not
# methods of the paper: every option at the library's default, the learning rate tuned around it.
_LIBRARY_LR = "learning rate: the library's default (the comparison tunes it x {1/3, 1, 3})"


@dataclass(frozen=True)
class SOAPOptions:
    """pytorch-optimizer's ``SOAP`` (Vyas et al. 2024) at the library's defaults."""

    lr: float = option(3e-3, _LIBRARY_LR, _OWN_CONFIG)
    betas: list = option([0.95, 0.95], "moment decay rates (the library's default)", "_soap")
    weight_decay: float = option(1e-2, "decoupled weight decay (the library's default)", "_soap")
    precondition_frequency: int = option(10, "steps between refreshes of the eigenbasis (the library's default)",
                                         "_soap")


@dataclass(frozen=True)
class ShampooOptions:
    """pytorch-optimizer's ``Shampoo`` (Gupta et al. 2018) at the library's defaults."""

    lr: float = option(1e-3, _LIBRARY_LR, _OWN_CONFIG)
    momentum: float = option(0.0, "momentum (the library's default)", "_shampoo")
    weight_decay: float = option(0.0, "weight decay (the library's default)", "_shampoo")
    preconditioning_compute_steps: int = option(1, "steps between preconditioner updates (the library's default)",
                                                "_shampoo")
    matrix_eps: float = option(1e-6, "added to each preconditioner's diagonal (the library's default); larger "
                               "if its float32 SVD fails to converge", "_shampoo")


@dataclass(frozen=True)
class ScalableShampooOptions:
    """pytorch-optimizer's ``ScalableShampoo`` (Anil et al. 2020, "Scalable second order optimization for
    deep learning") at the library's defaults (pytorch_optimizer/optimizer/shampoo.py, 4.1.0): Shampoo on
    blocks of at most ``block_size``, its step taking the norm of a grafted first-order step."""

    lr: float = option(1e-3, _LIBRARY_LR, _OWN_CONFIG)
    betas: list = option([0.9, 0.999], "momentum and preconditioner-statistics decay rates (the library's default)",
                         "_scalable_shampoo")
    weight_decay: float = option(0.0, "weight decay (the library's default)", "_scalable_shampoo")
    start_preconditioning_step: int = option(25, "steps taking the grafted step alone before Shampoo's (the "
                                                 "library's default)", "_scalable_shampoo")
    preconditioning_compute_steps: int = option(1000, "steps between inverse roots of the preconditioners; before the "
                                                      "first the preconditioner is the identity (the library's "
                                                      "default)", "_scalable_shampoo")
    block_size: int = option(512, "a dimension above it is split into blocks preconditioned apart (the library's "
                                  "default)", "_scalable_shampoo")
    graft_type: int = option(1, "whose step's norm the update takes: 0 none, 1 SGD, 2 AdaGrad, 3 RMSProp, 4 sqrt-n "
                                "(pytorch-optimizer's LayerWiseGrafting; the library's default)", "_scalable_shampoo")
    matrix_eps: float = option(1e-6, "added to each preconditioner's diagonal (the library's default)",
                               "_scalable_shampoo")


@dataclass(frozen=True)
class MuonOptions:
    """pytorch-optimizer's ``Muon`` (Jordan et al. 2024) at the library's defaults: on weight matrices,
    AdamW (``adamw_lr``) on biases."""

    lr: float = option(2e-2, _LIBRARY_LR + "; the weight matrices' (Muon's)", _OWN_CONFIG)
    momentum: float = option(0.95, "Nesterov momentum of the orthogonalised update (the library's default)",
                             "_muon")
    weight_decay: float = option(0.0, "weight decay (the library's default)", "_muon")
    adamw_lr: float = option(3e-4, "the biases' AdamW learning rate (the library's default)", "_muon")
    ns_dtype: str = option("auto", "the Newton-Schulz iteration's dtype: auto = bfloat16 on CUDA (the library's, "
                           "fixed there), float32 on a CPU (which emulates bfloat16 50-100 times slower); or "
                           "bfloat16, float32 (kfac_bench/optim/baselines.py newton_schulz_dtype)", "_muon")


@dataclass(frozen=True)
class KronOptions:
    """pytorch-optimizer's ``Kron`` (PSGD-Kron, Li) at the library's defaults."""

    lr: float = option(1e-3, _LIBRARY_LR, _OWN_CONFIG)
    momentum: float = option(0.9, "momentum (the library's default)", "_kron")
    weight_decay: float = option(0.0, "weight decay (the library's default)", "_kron")
    pre_conditioner_update_probability: float | None = option(
        None, "probability that a step updates the preconditioners; null = the library's schedule (1 for 500 "
              "steps, then decaying to 0.03: psgd.py precondition_update_prob_schedule)", "_kron")


FAMILIES = {"curvature": CurvatureOptions, "sgd": SGDOptions, "adam": AdamOptions, "soap": SOAPOptions,
            "shampoo": ShampooOptions, "scalable_shampoo": ScalableShampooOptions, "muon": MuonOptions,
            "kron": KronOptions}
FAMILY_TITLES = {CurvatureOptions: "Kronecker-factored methods", SGDOptions: "SGD", AdamOptions: "Adam",
                 SOAPOptions: "SOAP (pytorch-optimizer)", ShampooOptions: "Shampoo (pytorch-optimizer)",
                 ScalableShampooOptions: "Scalable Shampoo (pytorch-optimizer)",
                 MuonOptions: "Muon (pytorch-optimizer)", KronOptions: "PSGD-Kron (pytorch-optimizer)"}


def option_names(family: type, own: bool | None = None) -> tuple[str, ...]:
    """The options of ``family`` (``own``: only the method-specific ones, or only the others)."""
    return tuple(f.name for f in fields(family) if own is None or f.metadata["own"] == own)


def defaults(family: type) -> dict:
    """The optimizer's own default of every option of ``family``."""
    return {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(family)}


def config_nodes() -> dict[str, dict]:
    """The shared parts of the optimizer configs: node name -> {option: its value in a run}."""
    nodes: dict[str, dict] = {}
    for family in FAMILIES.values():
        for f in fields(family):
            if (f.metadata["node"] or "").startswith("_"):
                value = f.metadata["config"]
                nodes.setdefault(f.metadata["node"], {})[f.name] = list(value) if isinstance(value, tuple) else value
    return nodes


def register_config_nodes() -> None:
    """Store :func:`config_nodes` in Hydra's ConfigStore as the ``optimizer`` group's ``_<part>``
    options, so a method's YAML can name them in its defaults list."""
    from hydra.core.config_store import ConfigStore
    store = ConfigStore.instance()
    for name, node in config_nodes().items():
        store.store(group="optimizer", name=name, node=node, provider="kfac_bench")


def load_optimizer_config(path) -> Any:
    """``conf/optimizer/<name>.yaml`` as Hydra composes it (its defaults list's shared parts merged
    under it), unresolved, for the code that reads one config without composing a run."""
    from omegaconf import OmegaConf
    node = OmegaConf.load(path)
    parts = list(node.pop("defaults", None) or [])
    nodes = config_nodes()
    merged = OmegaConf.create()
    for part in parts:
        merged = OmegaConf.merge(merged, node if part == "_self_" else OmegaConf.create(nodes[part]))
    return merged if "_self_" in parts else OmegaConf.merge(merged, node)


def unknown_option_message(method: str, key: str, known) -> str:
    """The error of a config key that is no option of ``method``: it names the key, a close match,
    and every known option."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean optimizer.{close[0]}?)" if close else ""
    return (f"optimizer.{key} is not an option of {method}{hint}; its options are: {', '.join(known)} "
            f"(docs/usage.md, \"Optimizer options\")")


def markdown() -> str:
    """The option tables of ``docs/usage.md``, from the dataclasses' fields."""
    out = []
    for family, title in FAMILY_TITLES.items():
        out += [f"**{title}** (`{family.__name__}`)", "", "| option | default | config part | meaning |",
                "|---|---|---|---|"]
        for name, value in defaults(family).items():
            f = next(x for x in fields(family) if x.name == name)
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
            node = f.metadata["node"] or "(none: `+optimizer.<option>=`)"
            out.append(f"| `{f.name}` | `{shown}` | {node} | {f.metadata['doc'].replace('|', '&#124;')} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
