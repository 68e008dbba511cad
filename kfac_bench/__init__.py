"""kfac-bench: Kronecker-factored approximations of the Fisher matrix (Koroko et al.) and a harness
that reproduces the paper's experiments.

The library: :mod:`kfac_bench.curvature` (the mathematics), :mod:`kfac_bench.optim` (the optimizers),
:mod:`kfac_bench.models` (the networks). The harness: :mod:`kfac_bench.data`, :mod:`kfac_bench.runs`,
:mod:`kfac_bench.studies`, :mod:`kfac_bench.reproduce`, :mod:`kfac_bench.report`. The code map is in
docs/design.md, section 2.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Modules of the flat layout before issue 31, and where they live now. Importing an old path still
# works (the old module is a copy of the new one's namespace) and warns with the new path.
MOVED_MODULES = {
    "kfac_bench.train": "kfac_bench.runs.train",
    "kfac_bench.run_folder": "kfac_bench.runs.folder",
    "kfac_bench.sweep_outcomes": "kfac_bench.runs.sweep_outcomes",
    "kfac_bench.concurrency": "kfac_bench.runs.concurrency",
    "kfac_bench.fisher_study": "kfac_bench.studies.fisher",
    "kfac_bench.bench": "kfac_bench.studies.bench",
    "kfac_bench.bench_common": "kfac_bench.studies.bench_common",
    "kfac_bench.bench_peers": "kfac_bench.studies.bench_peers",
    "kfac_bench.report.verdict": "kfac_bench.reproduce.verdict",
}


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path of :data:`MOVED_MODULES` and loads it as its new module's namespace."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None                              # the default module object

    def exec_module(self, module):
        new = MOVED_MODULES[module.__name__]
        warnings.warn(f"{module.__name__} has moved to {new}; import {new} instead (docs/design.md, section 2)",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__doc__ = f"Moved to :mod:`{new}`."


if not any(isinstance(finder, _MovedModule) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModule())
