"""Writing a figure in every requested format: the one saving loop of the report's figures."""
from __future__ import annotations

from pathlib import Path


def save_figure(fig, out_stem: str | Path, formats, dpi: int) -> list[Path]:
    """``fig`` written as ``<out_stem>.<format>`` for each of ``formats`` (the folder made when
    missing); returns the paths in the order of ``formats``."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_name(f"{out_stem.name}.{fmt}") for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    return paths
