"""Build an optimizer from a plain mapping (an ``optimizer`` config group entry): the class its
registry entry names (:mod:`kfac_bench.registry`), with the options that entry lists.
:func:`build_optimizer` returns the ``torch.optim`` optimizer, :func:`build_training_optimizer` the
same as the harness drives it (:class:`kfac_bench.optim.training.TrainingOptimizer`).

This module and :mod:`kfac_bench.optim.authors_code` are the harness's glue: they read the registry;
the optimizers themselves (:mod:`kfac_bench.optim.kronecker_optimizer`) do not."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..curvature.approximations import ROUTES, SECOND_TERMS
from ..curvature.inverse import DAMPING_CONVENTIONS
from ..curvature.spatial import SPATIAL_TREATMENTS
from ..options import SGDOptions, defaults
from ..registry import get_method, method_names
from .kronecker_optimizer import AVERAGINGS, CURVATURE_SCHEDULES, KL_CLIP_TERMS, STATS_SAMPLINGS
from .training import TrainingOptimizer, as_training_optimizer

OPTION_CHOICES = {"curvature_schedule": CURVATURE_SCHEDULES, "damping_convention": DAMPING_CONVENTIONS,
                  "second_term": SECOND_TERMS, "stats_sampling": STATS_SAMPLINGS, "averaging": AVERAGINGS,
                  "kl_clip_terms": KL_CLIP_TERMS, "spatial": SPATIAL_TREATMENTS}


def optimizer_names() -> list[str]:
    return method_names()


def validate_optimizer_config(cfg: Mapping) -> None:
    """Reject bad values before any training, naming the field and the fix."""
    name = cfg.get("name")
    if name not in optimizer_names():
        raise ValueError(f"optimizer.name={name!r} is unknown; choose one of {optimizer_names()}")

    def positive(key):
        v = cfg.get(key)
        if v is None or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"optimizer.{key} must be a positive number, got {v!r} (e.g. optimizer.{key}=0.01)")

    entry = get_method(name)
    # an unknown key is an error, never swallowed: a typo (dampin) would otherwise train with the default
    for key in cfg:
        if not entry.takes(key):
            raise ValueError(entry.unknown_option(key))
    positive("lr")
    if entry.is_curvature:
        positive("damping")
        for key in ("T1", "T2"):
            v = cfg.get(key, 100)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"optimizer.{key} must be an integer >= 1, got {v!r}")
        route = cfg.get("route", "auto")
        if route not in ROUTES:
            raise ValueError(f"optimizer.route must be one of {list(ROUTES)}, got {route!r} (e.g. +optimizer.route=gram)")
        kl = cfg.get("kl_clip")
        if kl is not None and not (isinstance(kl, (int, float)) and kl > 0):
            raise ValueError(f"optimizer.kl_clip must be positive or null, got {kl!r}")
        if entry.rank_option is not None:
            rank = cfg.get(entry.rank_option, entry.rank)
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"optimizer.{entry.rank_option} (the Kronecker rank of {name}) must be an integer "
                                 f">= 1, got {rank!r} (e.g. optimizer.{entry.rank_option}=3)")
        for key, choices in OPTION_CHOICES.items():
            value = cfg.get(key)
            if value is not None and value not in choices:
                raise ValueError(f"optimizer.{key}={value!r} is unknown; choose one of {list(choices)}")
        _check_layer_options(cfg)
    if cfg.get("nesterov") and not cfg.get("momentum", defaults(SGDOptions)["momentum"]) > 0:
        # nesterov=True: the authors' SGD baseline (apps/mlp_cnn/train_mlp.py line 86 at commit
        # 97105b6); the paper says heavy-ball momentum, our default
        raise ValueError("optimizer.nesterov=true needs optimizer.momentum > 0")
    mom = cfg.get("momentum", 0.0)
    if not (isinstance(mom, (int, float)) and 0 <= mom < 1):
        raise ValueError(f"optimizer.momentum must be in [0, 1), got {mom!r}")
    wd = cfg.get("weight_decay", 0.0)
    if not (isinstance(wd, (int, float)) and wd >= 0):
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {wd!r}")


def _check_layer_options(cfg: Mapping) -> None:
    """``spatial_radius``: an integer >= 0 or null; ``layers``: null or a list of names."""
    radius = cfg.get("spatial_radius")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int) or radius < 0):
        raise ValueError(f"optimizer.spatial_radius must be an integer >= 0 or null, got {radius!r} "
                         f"(e.g. +optimizer.spatial_radius=2)")
    layers = cfg.get("layers")
    if layers is not None and (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence)
                               or not all(isinstance(x, str) for x in layers)):
        raise ValueError(f"optimizer.layers must be null or a list of layer kinds or module paths, got {layers!r} "
                         f"(e.g. '+optimizer.layers=[conv]')")


def build_optimizer(cfg: Mapping, model: nn.Module, likelihood: str, seed: int = 0,
                    record_timings: bool = False) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer of ``cfg`` (validated): the class of the registry entry
    ``cfg["name"]`` with the options the entry lists (a first-order entry's torch class gets its
    ``torch.optim`` arguments; a curvature one the model, the likelihood and the seed too)."""
    validate_optimizer_config(cfg)
    entry = get_method(cfg["name"])
    if not entry.is_curvature:
        # an option the config leaves out takes its default in kfac_bench.options (SGD's momentum 0.9,
        # paper 4.2, is not torch's); lists (a YAML betas) become tuples, as torch's own defaults are
        given = {k: cfg[k] for k in entry.options if cfg.get(k) is not None}
        options = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in {**defaults(entry.family), **given}.items() if k in entry.options}
        return entry.optimizer_class()(model.parameters(), lr=cfg["lr"], **options)
    # None means "the default" except for kl_clip, where it switches clipping off
    options = {k: cfg[k] for k in entry.options
               if k in cfg and cfg[k] is not None or k == "kl_clip" and k in cfg}
    return entry.optimizer_class()(model, lr=cfg["lr"], likelihood=likelihood, seed=seed,
                                   record_timings=record_timings, **options)


def build_training_optimizer(cfg: Mapping, model: nn.Module, likelihood: str, seed: int = 0,
                             record_timings: bool = False) -> TrainingOptimizer:
    """:func:`build_optimizer`, as the harness drives it (first-order ones wrapped in
    :class:`kfac_bench.optim.training.FirstOrder`)."""
    return as_training_optimizer(build_optimizer(cfg, model, likelihood, seed, record_timings))
