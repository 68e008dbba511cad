"""The one list of methods: every optimizer, configuration, study, benchmark and report reads it.

An entry names a method (the ``optimizer.name`` of its config, ``conf/optimizer/<name>.yaml``), its
label in tables and figures, its Kronecker rank (``None`` for the first-order baselines), where its
optimizer and approximation classes live, and its family of options (:mod:`kfac_bench.options`, where
each option is said once; a curvature method's own ones are its approximation class's
``extra_options``). Adding a method is one entry here, one approximation class and one config file of
a few lines (docs/design.md, "Adding a method").

The registry sits above the mathematics (:mod:`kfac_bench.curvature`) and the optimizers
(:mod:`kfac_bench.optim`): it names their classes, they never read it. The tables of classes by
name -- :data:`APPROXIMATIONS`, :data:`OPTIMIZERS` -- and :func:`make_approximation` are built here
from the entries.

Importing this module imports nothing heavy (no torch, no OmegaConf): listing names is free. The
classes are resolved on demand (:meth:`Method.optimizer_class`, :meth:`Method.approximation_class`,
and the two tables, resolved at their first use) and the tuned settings are read from the method's
config (:meth:`Method.tuned`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .options import (STRUCTURAL_KEYS, AdamOptions, CurvatureOptions, KronOptions, MuonOptions,
                      ScalableShampooOptions, SGDOptions, ShampooOptions, SOAPOptions, option_names,
                      unknown_option_message)
from .search_space import Choice, LogUniform, SearchSpace, markdown

# Options every Kronecker-factored optimizer accepts besides lr (kfac_bench.options.CurvatureOptions,
# where each is documented); a method adds those of its own its approximation class lists
# (``extra_options``: the rank of lanczos_k, ...).
CURVATURE_OPTIONS = tuple(k for k in option_names(CurvatureOptions, own=False) if k != "lr")


@dataclass(frozen=True)
class Method:
    """One method of the benchmark."""

    name: str
    label: str
    rank: int | None                 # Kronecker rank of the approximation; None: a first-order method
    optimizer: str                   # "module:Class" (first-order: torch's)
    approximation: str | None = None  # "module:Class" of kfac_bench.curvature (curvature methods)
    # the dataclass of the family's options (kfac_bench/options.py: defaults, documentation, config
    # parts); None: CurvatureOptions for a curvature method. Which method-specific options a curvature
    # method takes its approximation class says (``extra_options``), not this entry. An option a method
    # does not take is an error in its config, and the authors' behaviours
    # (kfac_bench/optim/authors_code.py) set an option only on the methods that take it.
    options_class: type | None = None
    # the rank is an option (``rank_option``) and ``rank`` is its default
    rank_option: str | None = None
    # the approximation is the best Kronecker approximation of its rank (Theorem 3.1), so methods of
    # one rank with this flag share a target (the Figure 1 study shares their spectrum work)
    best_of_rank: bool = False
    in_paper: bool = True            # one of the paper's methods (Figure 1 and 2 defaults)
    # the figures' colour and marker for a method they have no style of their own for
    colour: str | None = None
    marker: str = "."
    summary: str = ""
    paper: str = ""                  # where the paper defines it
    # the ranges its hyperparameters are tuned over, each a config key of its own (kfac_bench/search_space.py)
    search_space: SearchSpace | None = None

    @property
    def is_curvature(self) -> bool:
        return self.rank is not None

    @property
    def family(self) -> type:
        """The dataclass of its options (:mod:`kfac_bench.options`)."""
        return self.options_class or CurvatureOptions

    @property
    def extra_options(self) -> tuple[str, ...]:
        """The options it takes beyond :data:`CURVATURE_OPTIONS`: a curvature method's approximation
        class's ``extra_options`` (resolving the class imports torch), a first-order method's
        ``torch.optim`` arguments besides ``lr``."""
        if self.is_curvature:
            return tuple(self.approximation_class().extra_options)
        return tuple(k for k in option_names(self.family) if k != "lr")

    @property
    def options(self) -> tuple[str, ...]:
        """The config keys the method's optimizer accepts besides ``lr``."""
        return CURVATURE_OPTIONS + self.extra_options if self.is_curvature else self.extra_options

    def takes(self, key: str) -> bool:
        """Whether ``key`` may appear in this method's config (an option, ``lr``, ``name``, ``tuned``);
        only a method-specific option resolves the approximation class."""
        if key in STRUCTURAL_KEYS or key == "lr" or key in option_names(self.family, own=False):
            return True
        return key in option_names(self.family, own=True) and key in self.extra_options

    def unknown_option(self, key: str) -> str:
        """The error of a config key this method does not take, naming the ones it does."""
        return unknown_option_message(self.name, key, ("lr",) + self.options)

    def optimizer_class(self):
        return _resolve(self.optimizer)

    def approximation_class(self):
        if self.approximation is None:
            raise ValueError(f"{self.name} is a first-order method: it has no Kronecker approximation")
        return _resolve(self.approximation)

    def rank_of(self, options: dict | None = None) -> int | None:
        """The Kronecker rank of a configured instance (``options``: its config or keyword options)."""
        if self.rank_option is not None and options and options.get(self.rank_option) is not None:
            return int(options[self.rank_option])
        return self.rank

    def listed_options(self) -> tuple[str, ...]:
        """The options ``conf/optimizer/<name>.yaml`` lists, its shared parts merged in: those its
        method uses (a config lists the solver settings its method uses and no others,
        :mod:`kfac_bench.options`); () without a config file."""
        if self.name not in _LISTED:
            from .configs import config_dir
            from .options import load_optimizer_config
            path = config_dir() / "optimizer" / f"{self.name}.yaml"
            _LISTED[self.name] = (tuple(k for k in load_optimizer_config(path) if k not in STRUCTURAL_KEYS)
                                  if path.is_file() else ())
        return _LISTED[self.name]

    def tuned(self, dataset: str | None = None) -> dict:
        """The ``tuned:`` settings of ``conf/optimizer/<name>.yaml`` (all datasets, or one)."""
        from omegaconf import OmegaConf

        from .configs import config_dir
        path = config_dir() / "optimizer" / f"{self.name}.yaml"
        if not path.is_file():
            return {}
        node = OmegaConf.load(path)
        tuned = OmegaConf.to_container(node.tuned, resolve=True) if "tuned" in node else {}
        return tuned if dataset is None else dict(tuned.get(dataset) or {})


_LISTED: dict[str, tuple[str, ...]] = {}   # Method.listed_options, read once per method


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


_OPT = "kfac_bench.optim.kronecker_optimizer"
_APPROX = "kfac_bench.curvature.approximations"

# The search spaces. The paper's grid (section 4.2, conf/sweep/paper_grid.yaml) is {1, 3} x 10^{-1..-4} for lr
# and damping and {1e-2, 1e-3} for the KL clip; the paper's methods damp the first Kronecker term as KFAC does
# (about sqrt(lam) added to each factor, kfac_bench/curvature/inverse.py), so they share its ranges.
_PAPER_GRID = "paper 4.2's grid, {1, 3} x 10^-1..-4 (conf/sweep/paper_grid.yaml)"
_PAPER_SPACE = {
    "lr": LogUniform(1e-4, 0.3, _PAPER_GRID),
    "damping": LogUniform(1e-4, 0.3, _PAPER_GRID + "; factored: about sqrt(lam) added to each factor "
                                                   "(kfac_bench/curvature/inverse.py)"),
    "kl_clip": Choice((1e-3, 1e-2), "paper 4.2's grid (the clip of appendix E)"),
}
_LIBRARY = "pytorch_optimizer/optimizer/{}, 4.1.0"     # the pytorch-optimizer defaults the spaces are built around

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sgd", "SGD", None, "torch.optim:SGD", options_class=SGDOptions, summary="SGD with heavy-ball momentum",
           search_space=SearchSpace({
               "lr": LogUniform(1e-3, 1.0, "paper 4.2's grid tops at 0.3, the authors' selection "
                                           "(conf/optimizer/sgd.yaml): three decades reaching past it"),
               "momentum": Choice((0.0, 0.9, 0.99), "paper 4.2's 0.9; 0 plain SGD; 0.99 of Sutskever et al. "
                                                    "2013's largest values")})),
    Method("adam", "Adam", None, "torch.optim:Adam", options_class=AdamOptions, summary="Adam",
           search_space=SearchSpace({
               "lr": LogUniform(3e-5, 3e-2, "three decades centred on the authors' 1e-3 (conf/optimizer/adam.yaml; "
                                            "Kingma & Ba 2015's default)"),
               "betas": Choice(([0.9, 0.999], [0.9, 0.99], [0.9, 0.95]),
                               "beta2: Kingma & Ba 2015's 0.999 (paper 4.2); 0.99, and 0.95 as in Brown et al. "
                               "2020: shorter second-moment averages")})),
    # today's Kronecker-factored preconditioners (pytorch-optimizer), compared with, never claims' subjects
    Method("soap", "SOAP", None, "kfac_bench.optim.baselines:soap", options_class=SOAPOptions, in_paper=False,
           summary="Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024; pytorch-optimizer)",
           search_space=SearchSpace({
               "lr": LogUniform(1e-4, 1e-1, "three decades around the library's 3e-3 ("
                                            + _LIBRARY.format("soap.py") + ")"),
               "precondition_frequency": Choice((1, 10, 100), "the library's 10 (" + _LIBRARY.format("soap.py") + "), "
                                                "a decade either side: Vyas et al. 2024 show SOAP robust to "
                                                "infrequent eigenbasis updates")})),
    Method("shampoo", "Shampoo", None, "kfac_bench.optim.baselines:shampoo", options_class=ShampooOptions,
           in_paper=False, summary="Kronecker-factored preconditioner per tensor (Gupta et al. 2018; pytorch-optimizer)",
           search_space=SearchSpace({
               "lr": LogUniform(3e-5, 3e-2, "three decades centred on the library's 1e-3 ("
                                            + _LIBRARY.format("shampoo.py") + ")"),
               "matrix_eps": LogUniform(1e-6, 1e-1, "from the library's 1e-6 (" + _LIBRARY.format("shampoo.py") + ") "
                                                    "up: a larger one is the fix when a preconditioner's float32 SVD "
                                                    "fails, as on CURVES (issue 21); Gupta et al. 2018 start them at "
                                                    "eps I"),
               "preconditioning_compute_steps": Choice((1, 10, 100), "the library's 1 (" + _LIBRARY.format("shampoo.py")
                                                       + "), 10 and 100 amortising the roots' SVDs")})),
    Method("scalable_shampoo", "Scalable Shampoo", None, "kfac_bench.optim.baselines:scalable_shampoo",
           options_class=ScalableShampooOptions, in_paper=False,
           summary="Shampoo on blocks, grafted to SGD's step norm (Anil et al. 2020; pytorch-optimizer)",
           search_space=SearchSpace({
               "lr": LogUniform(1e-4, 1.0, "a decade below the library's 1e-3 (" + _LIBRARY.format("shampoo.py")
                                           + ") to SGD's range's top: SGD grafting gives the step SGD's norm"),
               "preconditioning_compute_steps": Choice((10, 100, 1000), "the library's 1000 ("
                                                       + _LIBRARY.format("shampoo.py") + ") down to 10: a fair-profile "
                                                       "tuning run (160 steps) ends before the first root at 1000"),
               "graft_type": Choice((1, 2, 3), "SGD (the library's 1), AdaGrad, RMSProp grafting (LayerWiseGrafting, "
                                               + _LIBRARY.format("utils/graft.py") + "; Agarwal et al. 2020)")})),
    Method("muon", "Muon", None, "kfac_bench.optim.baselines:muon", options_class=MuonOptions, in_paper=False,
           summary="orthogonalised momentum on weight matrices, AdamW on biases (Jordan et al. 2024; pytorch-optimizer)",
           search_space=SearchSpace({
               "lr": LogUniform(1e-3, 1.0, "three decades around the library's 2e-2 ("
                                           + _LIBRARY.format("muon/muon.py") + ")"),
               "momentum": Choice((0.85, 0.9, 0.95, 0.98), "the library's 0.95 (" + _LIBRARY.format("muon/muon.py")
                                  + "); Jordan et al. 2024's speedrun warms it up from 0.85")})),
    Method("kron", "PSGD-Kron", None, "kfac_bench.optim.baselines:kron", options_class=KronOptions, in_paper=False,
           summary="preconditioned SGD, Kronecker-factored preconditioners (Li; pytorch-optimizer)",
           search_space=SearchSpace({
               "lr": LogUniform(3e-5, 3e-2, "three decades centred on the library's 1e-3 ("
                                            + _LIBRARY.format("psgd.py") + ")"),
               "pre_conditioner_update_probability": LogUniform(
                   0.03, 1.0, "the library schedule's floor 0.03 to its start 1 (precondition_update_prob_schedule, "
                              + _LIBRARY.format("psgd.py") + "); a probability: at most 1", ceiling=1.0)})),
    Method("kfac", "KFAC", 1, f"{_OPT}:KFAC", f"{_APPROX}:KFAC",
           summary="E[a a^T] (x) E[g g^T]", paper="eq. (1), section 2.2", search_space=SearchSpace(_PAPER_SPACE)),
    Method("kpsvd", "KPSVD", 1, f"{_OPT}:KPSVD", f"{_APPROX}:KPSVD", best_of_rank=True,
           summary="best Kronecker product, power SVD of Z(F)", paper="section 3.1",
           search_space=SearchSpace(_PAPER_SPACE)),
    Method("deflation", "Deflation", 2, f"{_OPT}:Deflation", f"{_APPROX}:Deflation", best_of_rank=True,
           summary="KPSVD, then the best Kronecker product of the remainder", paper="section 3.2.1",
           search_space=SearchSpace(_PAPER_SPACE)),
    Method("lanczos", "Lanczos", 2, f"{_OPT}:Lanczos", f"{_APPROX}:Lanczos", best_of_rank=True,
           summary="best Kronecker rank 2 by restarted Lanczos bidiagonalisation", paper="section 3.2.2",
           search_space=SearchSpace(_PAPER_SPACE)),
    Method("kfac_corrected", "KFAC-corrected", 2, f"{_OPT}:KFACCorrected", f"{_APPROX}:KFACCorrected",
           summary="KFAC plus the best Kronecker correction", paper="section 3.3",
           search_space=SearchSpace(_PAPER_SPACE)),
    Method("lanczos_k", "Lanczos rank k", 3, f"{_OPT}:LanczosK", f"{_APPROX}:LanczosK",
           rank_option="k", best_of_rank=True, in_paper=False,
           summary="best Kronecker rank k by restarted Lanczos bidiagonalisation; damped solve by "
                   "conjugate gradients preconditioned by the rank-2 eigen-trick solve",
           paper="section 5 (\"one can go further in this direction\")", search_space=SearchSpace(_PAPER_SPACE)),
    # not a Kronecker sum (a diagonal in KFAC's eigenbasis): rank 1 counts its one pair of factors
    Method("ekfac", "EKFAC", 1, f"{_OPT}:EKFAC", "kfac_bench.curvature.ekfac:EKFAC", in_paper=False,
           colour="tab:brown", marker="P",
           summary="diag(Q^T F Q) in the eigenbasis Q of KFAC's factors, damping on the diagonal",
           paper="George et al. 2018, not in the paper",
           search_space=SearchSpace({
               **_PAPER_SPACE,
               # lam is added to each entry of the scaling S (kfac_bench/curvature/ekfac.py), not sqrt(lam) to
               # each factor. Measured on CURVES (KFAC's factors after 20 steps, batch 256): S per layer has its
               # mean at 2e-10..1e-6 and its top at 5e-6..1e-3, so the paper's smallest damping, 1e-4, exceeds
               # the top of 8 of the 12 layers: there EKFAC steps as lr/lam whatever S says
               "damping": LogUniform(1e-6, 0.3, "lam added to every eigenvalue of the scaling (George et al. 2018; "
                                                "kfac_bench/curvature/ekfac.py): two decades below the paper's grid, "
                                                "where CURVES' scaling (top 5e-6..1e-3 per layer) sets the step"),
               "T_scale": Choice((1, 10, 100), "George et al. 2018, Algorithm 1: the scaling every step (1, the "
                                               "default), 10 and 100 amortising it as T1 does the factors")})),
)}


def method_names() -> list[str]:
    return list(METHODS)


def curvature_method_names() -> list[str]:
    return [m.name for m in METHODS.values() if m.is_curvature]


def first_order_method_names() -> list[str]:
    return [m.name for m in METHODS.values() if not m.is_curvature]


def paper_method_names(curvature_only: bool = False) -> list[str]:
    """The paper's methods (``curvature_only``: its Kronecker-factored ones, Figure 1's)."""
    return [m.name for m in METHODS.values() if m.in_paper and (m.is_curvature or not curvature_only)]


# The roles the paper's claims give its methods: kfac_bench/report/claims.py names roles, never
# methods, so a method added here joins the claims its rank and kind make it a subject of.
REFERENCE_METHOD = "kfac"            # the approximation the paper measures the others against
FIGURE1_BEST_METHOD = "deflation"    # the one its Figure 1 finds closest to the Fisher
ROLES = {
    "reference": "the paper's reference approximation (KFAC)",
    "baselines": "the paper's first-order baselines",
    "curvature": "the paper's Kronecker-factored methods",
    "approximations": "the paper's Kronecker-factored methods but the reference: the ones it proposes",
    "rank1": "the paper's Kronecker-factored methods of rank 1 (the reference among them)",
    "rank1_approximations": "the paper's rank-1 methods but the reference",
    "rank2": "the paper's Kronecker-factored methods of rank 2",
    "figure1_best": "the approximation the paper's Figure 1 finds the closest to the Fisher",
}


def methods_in_role(role: str) -> tuple[str, ...]:
    """The paper's methods in ``role`` (one of :data:`ROLES`), in the registry's order."""
    paper = [METHODS[name] for name in paper_method_names()]
    curvature = [m for m in paper if m.is_curvature]
    members = {
        "reference": [METHODS[REFERENCE_METHOD]],
        "baselines": [m for m in paper if not m.is_curvature],
        "curvature": curvature,
        "approximations": [m for m in curvature if m.name != REFERENCE_METHOD],
        "rank1": [m for m in curvature if m.rank == 1],
        "rank1_approximations": [m for m in curvature if m.rank == 1 and m.name != REFERENCE_METHOD],
        "rank2": [m for m in curvature if m.rank == 2],
        "figure1_best": [METHODS[FIGURE1_BEST_METHOD]],
    }
    if role not in members:
        raise ValueError(f"unknown role {role!r}; choose one of {list(ROLES)}")
    return tuple(m.name for m in members[role])


def search_space(name: str) -> SearchSpace:
    """The ranges method ``name``'s hyperparameters are tuned over (:mod:`kfac_bench.search_space`)."""
    entry = get_method(name)
    if entry.search_space is None:
        raise ValueError(f"{name} declares no search space (its registry entry's search_space)")
    return entry.search_space


def search_space_table() -> str:
    """Every method's search space as the table of docs/usage.md, "Search spaces"."""
    return markdown({name: search_space(name) for name in METHODS})


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {method_names()}") from None


def method_label(name: str, rank: int | None = None) -> str:
    """The label of a method (``"Lanczos rank 3"`` for a variable-rank one given its rank); an
    unknown name is returned as it is."""
    entry = METHODS.get(name)
    if entry is None:
        return str(name)
    if entry.rank_option is not None and rank is not None:
        return f"{entry.label.rsplit(' k', 1)[0]} {rank}" if entry.label.endswith(" k") else f"{entry.label} {rank}"
    return entry.label


def approximation_classes() -> dict:
    """Curvature method name -> its approximation class (:mod:`kfac_bench.curvature.approximations`)."""
    return {name: METHODS[name].approximation_class() for name in curvature_method_names()}


def optimizer_classes() -> dict:
    """Curvature method name -> its ``torch.optim`` class (:mod:`kfac_bench.optim`)."""
    return {name: METHODS[name].optimizer_class() for name in curvature_method_names()}


def make_approximation(name: str, **options: object):
    """The approximation of curvature method ``name`` built with ``options`` (solver settings and the
    method's own options)."""
    classes = approximation_classes()
    if name not in classes:
        raise ValueError(f"unknown approximation {name!r}; choose one of {list(classes)}")
    return classes[name](**options)


def __getattr__(name: str):
    # APPROXIMATIONS and OPTIMIZERS, the tables of classes, resolved (importing torch) at first use
    tables = {"APPROXIMATIONS": approximation_classes, "OPTIMIZERS": optimizer_classes}
    if name in tables:
        value = globals()[name] = tables[name]()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CURVATURE_OPTIONS", "METHODS", "APPROXIMATIONS", "OPTIMIZERS", "approximation_classes",
           "optimizer_classes", "make_approximation", "Method", "method_names", "curvature_method_names",
           "first_order_method_names", "paper_method_names", "get_method", "method_label", "search_space",
           "search_space_table"]
