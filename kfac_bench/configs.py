"""Where the Hydra configs are.

The configs are edited in the repository's top-level ``conf/``; a wheel carries a copy of them as
``kfac_bench/conf`` (``pyproject.toml`` maps that package folder to ``conf/``). A source checkout,
an editable install and an installed wheel therefore all find them here. Imports nothing heavy.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """``kfac_bench/conf`` inside an installed wheel, else the checkout's ``conf/`` next to the package."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"kfac-bench's configs are missing: neither {_PACKAGE / 'conf'} (an installed wheel) nor "
        f"{_PACKAGE.parent / 'conf'} (a source checkout) holds config.yaml; reinstall the package "
        f"(pip install kfac-bench / pip install .)")


def dataset_config(option: str) -> dict | None:
    """The dataset part of ``conf/dataset/<option>.yaml`` as a plain dict (a problem config, ``# @package
    _global_``, holds it under ``dataset:``); None when no such file exists."""
    from omegaconf import OmegaConf
    path = config_dir() / "dataset" / f"{option}.yaml"
    if not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    if "dataset" in cfg and "name" not in cfg:
        cfg = cfg.dataset
    return OmegaConf.to_container(cfg, resolve=False)


__all__ = ["config_dir", "dataset_config"]
