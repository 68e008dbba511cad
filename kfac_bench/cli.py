"""``kfac-bench <verb> [hydra overrides]``: one Hydra app per verb; this module only wires configs
to functions.

Verbs: ``run`` (train), ``fisher`` (Figure 1 study), ``bench`` (cost benchmark), ``report``
(Figures 1-2 and tables from a results folder), ``data fetch <name>`` (download/build a dataset),
``data describe <name>`` (its scale: range, mean, std, best-constant-image loss, source).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .configs import config_dir

log = logging.getLogger("kfac_bench")

USAGE = """usage: kfac-bench <verb> [hydra overrides]

verbs:
  run      train one configuration (or a sweep with -m)   e.g. kfac-bench run optimizer=lanczos dataset=faces
  fisher   Figure 1: approximation errors of one layer    e.g. kfac-bench fisher dataset=mnist
  bench    what each method costs against its matrix products
  report   Figures 1-2 and the summary table from results/
  data     data fetch|describe mnist|curves|faces|...     e.g. kfac-bench data describe curves

A sweep (run -m) exits 1 when any job failed or was refused (a diverged run is a result: 0).
`kfac-bench --version` (-V) prints the version.
`kfac-bench <verb> --help` lists the config groups and options of a Hydra verb;
`kfac-bench <verb> --config-dir DIR ...` adds your own config folder (laid out like conf/)."""


def _run_name(override_dirname: str) -> str:
    """Folder name for a run: its overrides, or 'default'."""
    name = (override_dirname or "").replace("/", "_").replace("+", "")
    return name or "default"


def register_resolvers() -> None:
    """What composing conf/ needs besides its files: the run-name resolver, and the shared parts of
    the optimizer configs (``optimizer/_curvature`` ..., made from :mod:`kfac_bench.options`)."""
    if not OmegaConf.has_resolver("kfac_run_name"):
        OmegaConf.register_new_resolver("kfac_run_name", _run_name)
    from .options import register_config_nodes
    register_config_nodes()


register_resolvers()


_OPTION_OVERRIDE = re.compile(r"^\+{0,2}optimizer\.([A-Za-z_][A-Za-z0-9_]*)(?:[.=]|$)")
_GROUP_OVERRIDE = re.compile(r"^optimizer=(.*)$")


def unknown_optimizer_option(args: list[str]) -> str | None:
    """The error of a command line that sets an option its optimizer does not have
    (``optimizer.dampin=1``), before Hydra composes anything; None when there is none.

    Hydra itself rejects a key its config lacks, but its message names neither the known options nor
    the fix (and suggests ``+optimizer.dampin=1``, which the optimizer factory would then refuse).
    The optimizer is the ``optimizer=`` choice (each one of a sweep), else ``run``'s default; one
    that is no registry method (a config of your own, a glob) is left to the factory's check."""
    from .registry import METHODS
    keys = [m.group(1) for m in map(_OPTION_OVERRIDE.match, args) if m]
    if not keys:
        return None
    chosen = [m.group(1) for m in map(_GROUP_OVERRIDE.match, args) if m]
    if chosen:
        names = chosen[-1].split(",")
    else:
        defaults = OmegaConf.load(config_dir() / "config.yaml").defaults
        names = [d.optimizer for d in defaults if not isinstance(d, str) and "optimizer" in d]
    for name in names:
        entry = METHODS.get(name.strip())
        for key in keys if entry is not None else ():
            if not entry.takes(key):
                return entry.unknown_option(key)
    return None


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir)


def _fail(message: str, code: int) -> None:
    """A failed job: in a sweep the other jobs go on; a single run exits non-zero."""
    log.error(message)
    if not _is_multirun():
        print(f"kfac-bench: error: {message}", file=sys.stderr)
        sys.exit(code)


def _container(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _drop_log_file(folder: Path) -> None:
    """Stop this job's log from going to a file in ``folder`` (Hydra opened it before the task
    started): a command refused on a folder another process holds must write nothing there."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and \
                Path(handler.baseFilename).resolve().parent == folder.resolve():
            root.removeHandler(handler)
            handler.close()


def run_task(cfg) -> dict | None:
    from .runs import sweep_outcomes
    from .runs.folder import RunFolderBusy, hold_folder

    out = _output_dir()
    try:
        # taken before torch is even imported: a refusal comes at once
        with hold_folder(out):
            summary, outcome, code, message = _train_in(cfg, out)
    except RunFolderBusy as err:
        _drop_log_file(out)
        summary, outcome, code, message = None, "refused", 2, str(err)
    # diverged is a result (it is in the summary), not a failure of the command
    sweep_outcomes.record(outcome, message)
    if code:
        return _fail(message, code)
    log.info(message)
    return summary


def _train_in(cfg, out: Path) -> tuple[dict | None, str, int, str]:
    """Train ``cfg`` into ``out`` (held by this process): (summary, outcome, exit code, message)."""
    from .data import DatasetError
    from .runs.folder import RunFolderMismatch, record_refusal
    from .runs.train import ConfigError, RunFolderError, run_training, write_failure

    try:
        container = _container(cfg)
    except Exception as err:  # an interpolation that cannot resolve
        return None, "failed", 2, f"invalid configuration: {err}"
    try:
        summary = run_training(container, out)
    except RunFolderMismatch as err:
        record_refusal(out, err)          # the folder's own run stays untouched
        return None, "refused", 2, str(err)
    except (ConfigError, DatasetError, RunFolderError) as err:
        write_failure(out, container, err)
        return None, "failed", 2, str(err)
    except Exception as err:  # noqa: BLE001 - recorded, reported, and never kills a sweep
        log.exception("run failed")
        write_failure(out, container, err)
        return None, "failed", 1, f"run failed: {type(err).__name__}: {err} (see {out})"
    msg = (f"status {summary['status']}: train loss {summary['final_train_loss']:.6f}, "
           f"val loss {summary['final_val_loss']:.6f} after {summary['epochs_completed']} epochs, "
           f"{summary['total_time_s']:.1f} s training; run folder {out}")
    return summary, summary["status"], 0, msg


def fisher_task(cfg) -> None:
    from .data import DatasetError
    from .studies.fisher import run_fisher_study
    out = _output_dir()
    try:
        run_fisher_study(_container(cfg), out)
    except (ValueError, DatasetError) as err:
        return _fail(str(err), 2)


def bench_task(cfg) -> None:
    from .studies.bench import run_bench
    try:
        run_bench(_container(cfg), _output_dir())
    except ValueError as err:
        return _fail(str(err), 2)


def report_task(cfg) -> None:
    from .report import build_report
    try:
        build_report(_container(cfg))
    except ValueError as err:
        return _fail(str(err), 2)


APPS = {"run": ("config", run_task), "fisher": ("fisher", fisher_task),
        "bench": ("bench", bench_task), "report": ("report", report_task)}


# conf/dataset/ configs `data describe` takes: the auto-encoders' data and the classification problems
DESCRIBABLE = ["mnist", "curves", "faces", "mnist_conv", "mnist_mlp", "mnist_toynet", "fashion_mnist_deeplinear",
               "cifar10_convnet"]


def data_main(argv: list[str]) -> int:
    from .data import DatasetError, fetch_dataset
    parser = argparse.ArgumentParser(prog="kfac-bench data", description="Download or build a dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download (genuine) or build (generated) a dataset into the cache")
    fetch.add_argument("name", choices=["mnist", "curves", "faces", "fashion_mnist", "cifar10"])
    fetch.add_argument("--data-dir", default=None, help="cache folder (default: $KFAC_BENCH_DATA or ./data)")
    fetch.add_argument("--source", choices=["genuine", "generated"], default=None,
                       help="curves/faces: genuine .mat (needs internet) or our generated stand-in")
    fetch.add_argument("--olivetti", default=None,
                       help="faces generated: another olivettifaces.mat (default: $KFAC_BENCH_OLIVETTI, else the shipped copy)")
    describe = sub.add_parser("describe", help="print a dataset's scale (as training sees it) and its source")
    describe.add_argument("name", choices=DESCRIBABLE,
                          help="a dataset config of conf/dataset/ (the classification problems print their "
                               "labels' class counts and checksums)")
    describe.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                          help="dataset config overrides, e.g. source=genuine n_train=8192 n_val=1024 "
                               "(keys of conf/dataset/<name>.yaml)")
    describe.add_argument("--data-dir", default=None, help="cache folder (default: $KFAC_BENCH_DATA or ./data)")
    describe.add_argument("--olivetti", default=None,
                          help="faces generated: another olivettifaces.mat (default: $KFAC_BENCH_OLIVETTI, else the shipped copy)")
    # overrides may come after the options too (argparse stops a positional list at an option)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "describe" or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "describe":
        args.overrides = [*args.overrides, *extra]
    data_dir = args.data_dir or os.environ.get("KFAC_BENCH_DATA", "data")
    olivetti = args.olivetti or os.environ.get("KFAC_BENCH_OLIVETTI")
    try:
        if args.command == "describe":
            print(describe_dataset(args.name, args.overrides, data_dir, olivetti))
            return 0
        paths = fetch_dataset(args.name, data_dir, source=args.source, olivetti_path=olivetti, log=print)
    except DatasetError as err:
        print(f"kfac-bench: error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def describe_dataset(name: str, overrides: list[str], data_dir, olivetti=None) -> str:
    """``kfac-bench data describe``: load ``name`` as a run would (conf/dataset/<name>.yaml plus
    ``overrides``; the loading log goes to stderr) and format its statistics."""
    from .data import DatasetError, load_dataset
    from .data.statistics import describe_splits, format_description
    cfg = OmegaConf.load(config_dir() / "dataset" / f"{name}.yaml")
    if "dataset" in cfg and "name" not in cfg:   # a problem config (`# @package _global_`): its dataset part
        cfg = cfg.dataset
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or OmegaConf.select(cfg, key.strip(), default="<missing>") == "<missing>":
            raise DatasetError(f"data describe: {item!r} is not KEY=VALUE with a key of "
                               f"conf/dataset/{name}.yaml (e.g. n_train=8192, source=genuine)")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        if olivetti:
            cfg.olivetti_path = olivetti
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an override of the wrong type, an unresolvable interpolation
        raise DatasetError(f"data describe: invalid dataset config ({err})") from None
    splits = load_dataset(container, data_dir, "cpu", log=lambda msg: print(msg, file=sys.stderr))
    if splits.train_targets is not None:
        from .data.labelled import describe_labelled
        return describe_labelled(splits)
    return format_description(describe_splits(splits, container["likelihood"]))


def version() -> str:
    """The installed distribution's version; the package's own where it is not installed (a checkout
    on PYTHONPATH)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("kfac-bench")
    except PackageNotFoundError:
        from . import __version__
        return __version__


def main(argv: list[str] | None = None) -> int | None:
    # OpenMP's default busy-wait makes 2 torch threads slower than 1 on a loaded 2-core machine
    # (an eigh of 1024x1024: 0.3 s passive vs up to 28 s spinning). Must precede the torch import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"kfac-bench {version()}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb == "data":
        return data_main(rest)
    if verb not in APPS:
        print(f"kfac-bench: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    config_name, task = APPS[verb]
    if verb == "run" and not any(a.startswith(("--config-name", "-cn", "--config-dir", "-cd", "--config-path",
                                               "-cp")) for a in rest):
        error = unknown_optimizer_option(rest)
        if error:
            print(f"kfac-bench: error: {error}", file=sys.stderr)
            return 2
    import hydra
    sys.argv = [f"kfac-bench-{verb}"] + rest
    app = hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)
    app()
    # a sweep whose jobs failed: Hydra itself returns as if all went well (see sweep_outcomes)
    from .runs import sweep_outcomes
    return sweep_outcomes.exit_status()


if __name__ == "__main__":
    sys.exit(main())
