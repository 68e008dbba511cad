"""The authors' published curves (Koroko et al., repository ``Abdoulaye-Koroko/natural-gradients``),
vendored as package data: what ``kfac-bench report`` overlays on Figure 2.

The files of this folder are written by ``scripts/regenerate_authors_reference.py`` from the
authors' result files (see ``README.md`` and ``PROVENANCE.json`` here); nothing in them is typed by
hand. Method and dataset names are the project's (``kpsvd_d`` -> ``deflation``, ...).

Quantities, as the authors' ``apps/mlp_cnn/train_mlp.py`` computes them: ``train_loss`` is the
mean of the epoch's mini-batch losses (the harness's ``train_loss_running``), ``val_loss`` the
validation loss at the end of the epoch, ``time_s`` cumulative wall time on their GPU (an A100) from
before the data was loaded -- not comparable with the harness's seconds.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent
CURVES_FILE = REFERENCE_DIR / "authors_curves.csv"
ITERATIONS_FILE = REFERENCE_DIR / "authors_iterations.csv"
HYPERPARAMETERS_FILE = REFERENCE_DIR / "authors_hyperparameters.csv"
PROVENANCE_FILE = REFERENCE_DIR / "PROVENANCE.json"

CURVES_COLUMNS = ["dataset", "method", "epoch", "train_loss", "val_loss", "time_s"]
# what the authors' time column measures: why the report never puts it on the harness's time axis
TIME_NOTE = "cumulative wall time on the authors' A100, data loading included"
LABEL = "authors'"

__all__ = ["load_authors_curves", "load_authors_iterations", "load_authors_hyperparameters",
           "load_provenance", "authors_curve", "CURVES_FILE", "TIME_NOTE", "LABEL"]


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the package was installed without its reference data "
                                f"(regenerate it: python scripts/regenerate_authors_reference.py <authors' checkout>)")
    df = pd.read_csv(path)
    if columns is not None and list(df.columns) != columns:
        raise ValueError(f"{path}: columns {list(df.columns)}, expected {columns}")
    return df


@lru_cache(maxsize=4)
def _curves_cached(path: str) -> pd.DataFrame:
    df = _read(Path(path), CURVES_COLUMNS)
    if df.duplicated(["dataset", "method", "epoch"]).any():
        raise ValueError(f"{path}: a (dataset, method, epoch) appears twice")
    return df


def load_authors_curves(path: str | Path | None = None) -> pd.DataFrame:
    """Per-epoch curves, one row per (dataset, method, epoch): ``CURVES_COLUMNS``."""
    return _curves_cached(str(path or CURVES_FILE)).copy()


def authors_curve(dataset: str, method: str, path: str | Path | None = None) -> pd.DataFrame:
    """One (dataset, method)'s per-epoch curve, sorted by epoch (empty when the authors have none)."""
    df = _curves_cached(str(path or CURVES_FILE))
    part = df[(df["dataset"] == dataset) & (df["method"] == method)]
    return part.sort_values("epoch").reset_index(drop=True)


def load_authors_iterations(path: str | Path | None = None) -> pd.DataFrame:
    """Every mini-batch loss of the first epochs (``PROVENANCE.json: iteration_epochs``): dataset,
    method, iteration, epoch, train_loss (that mini-batch), time_s."""
    return _read(Path(path or ITERATIONS_FILE))


def load_authors_hyperparameters(path: str | Path | None = None) -> pd.DataFrame:
    """The selected hyperparameters stored in the authors' ``grid_search/<name>.npy`` files."""
    return _read(Path(path or HYPERPARAMETERS_FILE))


def load_provenance(path: str | Path | None = None) -> dict:
    """Repository, commit, source files with their sha256, name mapping (``PROVENANCE.json``)."""
    return json.loads(Path(path or PROVENANCE_FILE).read_text())
