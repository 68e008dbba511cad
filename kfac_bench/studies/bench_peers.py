"""``kfac-bench bench bench.peers=[asdl]``: our KFAC step beside the KFAC of a library that a user
could pick instead, on the same network, batch and curvature intervals, in the same interleaved
rounds.

Four runners per dataset, each with its own copy of the auto-encoder (same initial weights):

* ``ours_sgd``: our SGD (``conf/optimizer/sgd.yaml``'s momentum, the bench's lr), the baseline of
  our ratio; ``ours_kfac``: our KFAC (``conf/optimizer/kfac.yaml`` with the bench's lr, damping, T1,
  T2), driven only through the ``torch.optim`` interface (``zero_grad; loss.backward(); step``);
* ``asdl_sgd``: ``torch.optim.SGD`` with the same lr and momentum, the baseline of ASDL's ratio;
  ``asdl_kfac``: ASDL's ``KfacGradientMaker`` (package ``asdfghjkl``, the optional extra
  ``kfac-bench[peers]``) with a Monte-Carlo Fisher, curvature interval T1, preconditioner interval
  T2, the same damping and moving-average weight alpha, then that SGD.

Both KFACs update their curvature at steps 0, T1, 2 T1, ... (ASDL's interval schedule is
``step % interval == 0`` too), so a window of ``lcm(T1, T2)`` consecutive steps holds exactly one
update of each kind: its mean step time is the amortised step, measured literally (no model of
the parts). A round is one such window: at every slot of it each runner takes one step on the same
batch, in an order drawn at random every slot (seeded), so drift and other processes' load hit every
runner alike and no runner always follows the same one (a rotation keeps the cyclic neighbours, and
with them whatever one step leaves in the caches for the next).
Ratios are paired by round (a window's mean over the same round's window of the baseline) before
the median over rounds is taken. One untimed window first pays the first (cold) update and the
allocators' warm-up.

Layers: both KFACs precondition the same layers, those both handle (:func:`common_layers`; column
``layers``: ``all``, or our ``layers=`` paths). On the MNIST CNN auto-encoder (``dataset=mnist_conv``)
that is its two ``nn.Conv2d`` layers (``encoder.0,encoder.2``): ASDL has no ``nn.ConvTranspose2d``
and sends the decoder's two to the plain SGD step, and ours is restricted to match. There ASDL's KFAC
diverges at the bench's lr (docs/bench.md, "On the CNN"): run it with ``bench.lr=0.00001``. Both treat a convolution's
positions as independent (KFC: ``A`` over the unfolded patches of every position, ``G`` over the
output gradients; ours ``spatial=independent``, the default).

Where the two KFACs differ by design (they are not the same algorithm, only the same cost class):
ours takes the true Fisher of the dataset's likelihood (Bernoulli for the binary images) from an
extra forward/backward pass every T1 steps, preconditions ``[W | b]`` with the bias folded into the
input factor and clips the step by KL (appendix E); ASDL samples its Fisher targets in the
training pass itself, from a categorical over the outputs (``loss_type="cross_entropy"``; it has no
Bernoulli) or a Gaussian (``"mse"``, FACES), treats the bias as its own block and does not clip.

``sgd_control`` is ``ours_sgd`` over ``asdl_sgd`` (paired by round): the two run the same computation
(same network, loss, torch SGD), so its distance from 1 is the resolution of the other ratios here.

Outputs: ``bench_peers.csv`` / ``bench_peers.md`` in the bench's folder, and a printed table.
"""
from __future__ import annotations

import importlib
import logging
import math
import random
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .bench_common import bench_batches, markdown_table, optimizer_config
from ..curvature.capture import captures_for
from ..curvature.stats import get_likelihood
from ..models import build_autoencoder
from ..optim.factory import build_training_optimizer
from ..utils import atomic_write_text, synchronize

log = logging.getLogger("kfac_bench.studies.bench")

PEERS = {"asdl": "asdfghjkl"}     # peer name -> the distribution that provides it (import name: asdl)
RUNNERS = ("ours_sgd", "ours_kfac", "asdl_sgd", "asdl_kfac")
COLUMNS = ["dataset", "batch_size", "T1", "T2", "rounds", "layers",
           "ours_sgd_ms", "ours_kfac_ms", "asdl_sgd_ms", "asdl_kfac_ms",
           "ours_kfac_regular_ms", "asdl_kfac_regular_ms", "ours_kfac_update_ms", "asdl_kfac_update_ms",
           "ours_ratio", "asdl_ratio", "ours_over_asdl", "ours_over_asdl_lo", "ours_over_asdl_hi",
           "sgd_control"]


class PeerUnavailable(ValueError):
    """A peer library that is not installed; the message says how to install it."""


def check_peers(peers) -> list[str]:
    """The validated list of peer names (``bench.peers``); PeerUnavailable when one is missing."""
    if peers is None:
        return []
    if isinstance(peers, str) or not all(isinstance(p, str) for p in peers):
        raise ValueError(f"bench.peers must be a list of names among {sorted(PEERS)}, got {peers!r} "
                         f"(e.g. 'bench.peers=[asdl]')")
    peers = list(peers)
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"bench.peers: unknown peer(s) {unknown}; choose among {sorted(PEERS)}")
    for p in peers:
        try:
            importlib.import_module(p)
        except ImportError as err:
            raise PeerUnavailable(
                f"bench.peers=[{p}] needs the {PEERS[p]} package ({err}); install the optional extra: "
                f"pip install 'kfac-bench[peers]' (or: pip install {PEERS[p]} --no-deps)") from None
    return peers


# ------------------------------------------------------------------------------------ runners
class _Runner:
    """One model with one optimizer; ``step(x)`` is one full training step on batch ``x`` and says
    whether it did curvature work (a statistics or an inverse update)."""

    def __init__(self, name: str, model: nn.Module, step):
        self.name, self.model, self._step = name, model, step
        self.windows: list[list[float]] = []       # per timed round: seconds of each step
        self.update_slots: set[int] = set()        # slots of a window whose step did curvature work

    def step(self, x: torch.Tensor) -> bool:
        return bool(self._step(x))

    def is_update(self, k: int) -> bool:
        return k in self.update_slots


def common_layers(model: nn.Module) -> list[str] | None:
    """The module paths that both our optimizers and ASDL precondition, as our ``layers=`` option: None
    when ASDL takes every layer ours does (the MLPs), else the paths of those it takes (the CNN:
    ASDL 0.1a5 has no ``nn.ConvTranspose2d`` -- ``asdl.core._supported_module_classes`` lists Linear,
    Conv2d, BatchNorm, LayerNorm, Embedding -- and leaves those layers to the plain SGD step, so ours
    does too). Our layers come from the captures (:mod:`kfac_bench.curvature.capture`), ASDL's from
    its ``named_supported_modules``."""
    from asdl.core import named_supported_modules
    theirs = {path for path, _ in named_supported_modules(model)}
    ours = [path for path, module in model.named_modules() if captures_for(module)]
    common = [path for path in ours if path in theirs]
    if not common:
        raise ValueError(f"ASDL preconditions none of the layers ours does ({ours}): nothing to compare")
    return None if len(common) == len(ours) else common


def _ours(method: str, ds: dict, bench: dict, device, seed: int, layers: list[str] | None = None) -> _Runner:
    """Our optimizer of ``method`` (on the ``layers`` both libraries precondition, :func:`common_layers`),
    driven like every other through the harness's interface: the step's report says whether it did
    curvature work."""
    likelihood = get_likelihood(ds["likelihood"])
    model = build_autoencoder(ds, seed).to(device)
    config = optimizer_config(method, bench)
    if layers is not None:
        config["layers"] = list(layers)
    opt = build_training_optimizer(config, model, likelihood.name, seed)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = likelihood.batch_loss(model(x), x)
        loss.backward()
        return opt.train_step(targets=x).curvature_work

    return _Runner(f"ours_{method}", model, step)


def _torch_sgd(ds: dict, bench: dict, device, seed: int):
    """The model, torch's SGD (our SGD config's lr and momentum), the loss and the likelihood."""
    likelihood = get_likelihood(ds["likelihood"])
    model = build_autoencoder(ds, seed).to(device)
    sgd_cfg = optimizer_config("sgd", bench)
    opt = torch.optim.SGD(model.parameters(), lr=sgd_cfg["lr"], momentum=sgd_cfg.get("momentum", 0.9))
    loss_fn = nn.BCEWithLogitsLoss() if likelihood.name == "bernoulli" else nn.MSELoss()
    return model, opt, loss_fn, likelihood


def _asdl_sgd(ds: dict, bench: dict, device, seed: int) -> _Runner:
    model, opt, loss_fn, _ = _torch_sgd(ds, bench, device, seed)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), x).backward()
        opt.step()
        return False
    return _Runner("asdl_sgd", model, step)


def _asdl_kfac(ds: dict, bench: dict, device, seed: int) -> _Runner:
    model, opt, loss_fn, likelihood = _torch_sgd(ds, bench, device, seed)
    from asdl import KfacGradientMaker, PreconditioningConfig
    kfac_cfg = optimizer_config("kfac", bench)
    config = PreconditioningConfig(data_size=int(ds["batch_size"]), damping=float(kfac_cfg["damping"]),
                                   curvature_upd_interval=int(bench["T1"]),
                                   preconditioner_upd_interval=int(bench["T2"]),
                                   ema_decay=float(kfac_cfg.get("alpha", 0.95)))
    maker = KfacGradientMaker(model, config, fisher_type="fisher_mc",
                              loss_type="cross_entropy" if likelihood.name == "bernoulli" else "mse")

    count = [0]   # ASDL's own step counter: its interval schedule is step % interval == 0

    def step(x):
        opt.zero_grad(set_to_none=True)
        dummy_y = maker.setup_model_call(model, x)
        maker.setup_loss_call(loss_fn, dummy_y, x)
        maker.forward_and_backward()
        opt.step()
        k, count[0] = count[0], count[0] + 1
        return k % bench["T1"] == 0 or k % bench["T2"] == 0

    return _Runner("asdl_kfac", model, step)


# -------------------------------------------------------------------------------------- rounds
def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else float("nan")


def _peer_dataset(ds: dict, bench: dict, cfg: dict, device) -> dict:
    seed = int(cfg.get("seed", 0))
    batches, _ = bench_batches(ds, bench, cfg.get("data_dir", "data"), device, seed)
    layers = common_layers(build_autoencoder(ds, seed))
    runners = [_ours("sgd", ds, bench, device, seed), _ours("kfac", ds, bench, device, seed, layers),
               _asdl_sgd(ds, bench, device, seed), _asdl_kfac(ds, bench, device, seed)]
    window = math.lcm(int(bench["T1"]), int(bench["T2"]))
    order = random.Random(seed)
    rounds = int(bench.get("peer_rounds") or bench["rounds"])
    for r in range(rounds + 1):            # round 0: untimed warm-up (the first, cold update)
        times = {run.name: [] for run in runners}
        for k in range(window):
            x = batches[(r * window + k) % len(batches)]
            for run in order.sample(runners, len(runners)):
                synchronize(device)
                t0 = time.perf_counter()
                updated = run.step(x)
                synchronize(device)
                times[run.name].append(time.perf_counter() - t0)
                if updated:
                    run.update_slots.add(k)
        if r:
            for run in runners:
                run.windows.append(times[run.name])
        log.info("bench peers %s: round %d/%d done", ds["name"], r, rounds)
    by = {run.name: run for run in runners}
    mean = {name: [sum(w) / len(w) for w in run.windows] for name, run in by.items()}

    def paired(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(mean[a], mean[b])]

    def split(name: str, update: bool) -> float:
        run = by[name]
        return 1e3 * _median([t for w in run.windows for k, t in enumerate(w) if run.is_update(k) == update])

    ours_over = paired("ours_kfac", "asdl_kfac")
    row = {"dataset": ds["name"], "batch_size": int(ds["batch_size"]), "T1": int(bench["T1"]),
           "T2": int(bench["T2"]), "rounds": rounds, "layers": "all" if layers is None else ",".join(layers),
           **{f"{name}_ms": 1e3 * _median(mean[name]) for name in RUNNERS},
           "ours_kfac_regular_ms": split("ours_kfac", False), "asdl_kfac_regular_ms": split("asdl_kfac", False),
           "ours_kfac_update_ms": split("ours_kfac", True), "asdl_kfac_update_ms": split("asdl_kfac", True),
           "ours_ratio": _median(paired("ours_kfac", "ours_sgd")),
           "asdl_ratio": _median(paired("asdl_kfac", "asdl_sgd")),
           "ours_over_asdl": _median(ours_over),
           "ours_over_asdl_lo": min(ours_over), "ours_over_asdl_hi": max(ours_over),
           # the two SGD runners do the same computation: how far their ratio is from 1 is the
           # resolution of this comparison on this machine
           "sgd_control": _median(paired("ours_sgd", "asdl_sgd"))}
    return row


def run_peers(datasets: list[dict], bench: dict, cfg: dict, device, out_dir: Path) -> pd.DataFrame:
    """The peer comparison for every dataset of the bench; writes ``bench_peers.csv`` and
    ``bench_peers.md`` into ``out_dir`` and prints the table."""
    peers = check_peers(bench.get("peers"))
    if not peers:
        return pd.DataFrame(columns=COLUMNS)
    torch.manual_seed(int(cfg.get("seed", 0)))
    torch.set_flush_denormal(True)   # as in train.py: subnormal floats slow CPU products 100x
    threads_before = torch.get_num_threads()
    if bench.get("threads") is not None:
        torch.set_num_threads(int(bench["threads"]))
    try:
        rows = [_peer_dataset(ds, bench, cfg, device) for ds in datasets]
    finally:
        torch.set_num_threads(threads_before)
    df = pd.DataFrame(rows, columns=COLUMNS)
    shown = ["dataset", "batch_size", "layers", "ours_sgd_ms", "ours_kfac_ms", "asdl_sgd_ms", "asdl_kfac_ms",
             "ours_ratio", "asdl_ratio", "ours_over_asdl", "ours_over_asdl_lo", "ours_over_asdl_hi", "sgd_control"]
    text = (f"Peers ({', '.join(peers)}), {device}, T1 = {bench['T1']}, T2 = {bench['T2']}: amortised step "
            f"= mean over a window of lcm(T1, T2) steps (ms, median over rounds); ours_ratio = our KFAC / "
            f"our SGD, asdl_ratio = ASDL's KFAC / its SGD, ours_over_asdl = our KFAC / ASDL's KFAC "
            f"(paired by round; lo/hi: range over rounds); sgd_control = our SGD / torch's SGD, the same "
            f"computation: its distance from 1 is the resolution of these ratios on this machine\n\n"
            + markdown_table(df[shown], shown))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "bench_peers.csv", index=False)
    atomic_write_text(out_dir / "bench_peers.md", text + "\n")
    print(text)
    print(f"written: {out_dir / 'bench_peers.csv'}, {out_dir / 'bench_peers.md'}")
    return df


__all__ = ["run_peers", "check_peers", "common_layers", "PeerUnavailable", "PEERS", "COLUMNS"]
