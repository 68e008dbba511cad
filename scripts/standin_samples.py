#!/usr/bin/env python
"""Sample grids of the generated stand-ins, the previous generator version next to this one.

    KFAC_BENCH_OLIVETTI=/path/to/olivettifaces.mat python scripts/standin_samples.py \\
        --old-rev 4ab6f85 --out docs/figures/standins

The previous version's generator is taken from git (``git show <old-rev>:kfac_bench/data/<name>.py``,
imported as a temporary module beside this checkout's data modules), so the old pictures come from
the old code, not from an imitation of it. Both versions are shown on the default sets
(conf/dataset/<name>.yaml: CURVES 20,000 images, seed 1234; FACES 103,500 views, seed 1234), the
first 64 training images of each, with the statistics of ``kfac-bench data describe`` in the titles.
Writes ``<out>/curves_v{old}_vs_v{new}.png`` and ``<out>/faces_v{old}_vs_v{new}.png`` and prints the
numbers of both versions.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def old_module(rev: str, name: str):
    """``kfac_bench/data/<name>.py`` at git revision ``rev``, imported as ``kfac_bench.data._old_<name>``."""
    source = subprocess.run(["git", "show", f"{rev}:kfac_bench/data/{name}.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    tmp = Path(tempfile.mkdtemp()) / f"_old_{name}.py"
    tmp.write_text(source)
    spec = importlib.util.spec_from_file_location(f"kfac_bench.data._old_{name}", tmp)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # its relative imports resolve to this checkout's data package
    return module


def grid(images, side: int, rows: int = 8, pad: int = 1, fill: float = 0.0):
    import torch
    n = rows * rows
    imgs = images[:n].reshape(n, side, side)
    out = torch.full((rows * (side + pad) + pad, rows * (side + pad) + pad), fill)
    for k in range(n):
        r, c = divmod(k, rows)
        out[pad + r * (side + pad):pad + r * (side + pad) + side, pad + c * (side + pad):pad + c * (side + pad) + side] = imgs[k]
    return out


def number(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals, without the sign of a negative that rounds to zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def stats_line(splits, likelihood: str) -> tuple[str, dict]:
    from kfac_bench.data.statistics import describe_splits
    d = describe_splits(splits, likelihood)
    t = d["splits"]["train"]
    text = f"train values [{t['min']:.2f}, {t['max']:.2f}], mean {number(t['mean'], 3)}, std {t['std']:.3f}\n" \
           f"best constant image {'BCE' if likelihood == 'bernoulli' else 'MSE'} {t['best_constant_loss']:.4f}"
    if likelihood == "bernoulli":
        text += f", entropy floor {t['entropy_floor']:.4f}"
    return text, d


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", required=True, help="git revision holding the previous generators")
    parser.add_argument("--out", default="docs/figures/standins")
    parser.add_argument("--data-dir", default=os.environ.get("KFAC_BENCH_DATA", "data"))
    parser.add_argument("--olivetti", default=os.environ.get("KFAC_BENCH_OLIVETTI"))
    args = parser.parse_args(argv)
    if not args.olivetti:
        parser.error("FACES needs the Olivetti faces: --olivetti PATH or $KFAC_BENCH_OLIVETTI")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omegaconf import OmegaConf

    from kfac_bench.data import curves, faces, load_dataset
    from kfac_bench.data.common import DatasetSplits

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    for name, module, likelihood in (("curves", curves, "bernoulli"), ("faces", faces, "gaussian")):
        cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "dataset" / f"{name}.yaml"), resolve=False)
        cfg["olivetti_path"] = args.olivetti
        n_train, n_val = cfg["n_train"], cfg["n_val"]
        new = load_dataset(cfg, args.data_dir, log=quiet)
        old = old_module(args.old_rev, name)
        gen = cfg["generator"]
        if name == "curves":
            raw = old.generate_curves(gen["n_images"], gen["seed"])
            side = curves.SIDE
        else:
            raw = old.build_faces(old.load_olivetti(args.olivetti), gen["n_images"], gen["seed"],
                                  gen["rotation_deg"], gen["scale"], gen["max_shift"])
            side = faces.SIDE
        old_version = getattr(old, "GENERATOR_VERSION", getattr(old, "BUILDER_VERSION", None))
        old_splits = DatasetSplits(name, "generated", raw[:n_train], raw[n_train:n_train + n_val],
                                   f"{name} generator v{old_version}", {"generator_version": old_version})
        new_version = new.details["generator_version"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 6.2))
        for ax, splits, version in ((axes[0], old_splits, old_version), (axes[1], new, new_version)):
            text, d = stats_line(splits, likelihood)
            if name == "curves":
                lo, hi = 0.0, 1.0
            else:  # old views in [0, 1]; standardised views on a fixed +-3 std window
                lo, hi = (0.0, 1.0) if splits is old_splits else (-3.0, 3.0)
            ax.imshow(grid(splits.train, side, fill=lo).numpy(), cmap="gray", vmin=lo, vmax=hi,
                      interpolation="nearest")
            ax.set_title(f"{name.upper()} GENERATED STAND-IN v{version}"
                         f"{' (this code)' if splits is new else ' (previous)'}\n{text}"
                         f"\nshown: grey scale [{lo:g}, {hi:g}]", fontsize=8.5)
            ax.axis("off")
            t = d["splits"]["train"]
            v = d["splits"]["val"]
            print(f"{name} v{version}: train min {t['min']:.4f} max {t['max']:.4f} mean {number(t['mean'], 4)} "
                  f"std {t['std']:.4f} best-constant {t['best_constant_loss']:.4f} (val {v['best_constant_loss']:.4f})"
                  + (f" entropy floor {t['entropy_floor']:.4f}" if likelihood == "bernoulli" else ""))
        fig.text(0.5, 0.01, f"first 64 training images of the default {name.upper()} stand-in "
                 f"(seed {gen['seed']}); made by scripts/standin_samples.py --old-rev {args.old_rev}",
                 ha="center", fontsize=8)
        fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.05, wspace=0.05)
        path = out / f"{name}_v{old_version}_vs_v{new_version}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
