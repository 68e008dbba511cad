#!/usr/bin/env python
"""Regenerate the authors' published curves (``kfac_bench/reference/``) from their repository.

    git clone https://github.com/Abdoulaye-Koroko/natural-gradients /tmp/natural-gradients
    python scripts/regenerate_authors_reference.py /tmp/natural-gradients
    python scripts/regenerate_authors_reference.py /path/to/natural-gradients.git --commit 97105b6   # a git dir

Reads, for CURVES (batch 256), MNIST (512) and FACES (1024), the seven result files
``apps/mlp_cnn/results_ref/kpsvd_approx/<DATASET>/outputs_<batch>/<name>.npy`` and the selected
hyperparameters ``.../<DATASET>/grid_search/<name>.npy``. They are pickles (``np.save`` of a dict);
they are decoded by :func:`kfac_bench.reference.npy_pickle.read_pickled_npy`, which refuses any
pickle that names something other than numpy array reconstruction. Writes into ``--out``
(default: the package's ``kfac_bench/reference/``):

* ``authors_curves.csv``       dataset, method, epoch (1..200), train_loss, val_loss, time_s
* ``authors_iterations.csv``   dataset, method, iteration, epoch, train_loss, time_s: every
                               mini-batch of the first ``--iteration-epochs`` epochs (default 10)
* ``authors_hyperparameters.csv`` dataset, method, authors_name, batch_size (of the outputs_<batch>
                               folder) and what the grid-search file stores
* ``PROVENANCE.json``          repository, commit, every file read with its sha256 (and git blob id),
                               the name mapping, and the sha256 of the files written

Method names are ours (``kpsvd_d`` -> deflation, ...; see ``AUTHORS_NAMES``). The output is
deterministic: rerunning on the same commit rewrites the same bytes.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the package of this checkout, installed or not

from kfac_bench.reference.npy_pickle import read_pickled_npy  # noqa: E402

REPOSITORY = "https://github.com/Abdoulaye-Koroko/natural-gradients"
PAPER_COMMIT = "97105b613b54915b83c627e8aa5ca6e45edc2c2d"   # the commit the project's issue 10 names
RESULTS = "apps/mlp_cnn/results_ref/kpsvd_approx"
# (our dataset name, the authors' folder, the batch size of the outputs_<batch> folder)
DATASETS = [("curves", "CURVES", 256), ("mnist", "MNIST", 512), ("faces", "FACES", 1024)]
# our method name -> the authors' file name. Where each is confirmed (commit 97105b6):
#   kpsvd_d = Deflation: apps/mlp_cnn/notebbok.ipynb:322-324 (the Figure 2 plotting cell:
#     `if name =="kpsvd_d": label = "DEFLATION"`), utils/compute_fishers.py:234-252 (the "#DEFLATION"
#     block fills R1,S1,R2,S2) and 130,323 (its error is results["kpsvd_d"]);
#   lzs = Lanczos: apps/mlp_cnn/notebbok.ipynb:326-328 (`elif name=="lzs": label = "LANCZOS"`),
#     utils/compute_fishers.py:210-219 ("#LANCZOS" block: A,B,C,D = lanczos_mlp) and 134,317;
#   kfac_cor = KFAC-corrected: apps/mlp_cnn/train_mlp.py:108-111 (`optim=="kfac_cor"` builds
#     KFAC_CORRECTED), apps/mlp_cnn/notebbok.ipynb:356 (other names are labelled name.upper());
#   sgd, adam, kfac, kpsvd: apps/mlp_cnn/train_mlp.py:85-101;
#   the file name is the --optim name: results_ref/kpsvd_approx/.ipynb_checkpoints/main-checkpoint.py
#     :317 (tensorboard_name = optim), 184 and 303-304 (np.save(<root>/outputs_<batch>/<name>.npy)),
#     188 and 319 (the curvature names there: kfac, kpsvd, kfac_cor, lzs, kpsvd_d); the figure's list
#     of names: apps/mlp_cnn/notebbok.ipynb:451.
AUTHORS_NAMES = {"sgd": "sgd", "adam": "adam", "kfac": "kfac", "kpsvd": "kpsvd", "deflation": "kpsvd_d",
                 "lanczos": "lzs", "kfac_corrected": "kfac_cor"}
CURVE_KEYS = ("train_loss", "val_loss", "times", "train_itera_loss", "train_itera_time", "iteras")
CURVES_COLUMNS = ["dataset", "method", "epoch", "train_loss", "val_loss", "time_s"]
ITERATION_COLUMNS = ["dataset", "method", "iteration", "epoch", "train_loss", "time_s"]
HYPER_COLUMNS = ["dataset", "method", "authors_name", "batch_size", "lr", "damping", "kl", "T_cov", "T_inv"]


class AuthorsRepository:
    """Files of the authors' repository at one commit: a checkout (files read from disk; the commit
    from ``git rev-parse`` when it is a git work tree) or a git directory (``git show``)."""

    def __init__(self, path: Path, commit: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise SystemExit(f"{self.path} does not exist: clone {REPOSITORY} and pass its folder")
        self.checkout = (self.path / "apps").is_dir()
        if self.checkout:
            if commit is not None:
                raise SystemExit("--commit is for a git directory; check the commit out in the checkout instead")
            self.commit = self._git("rev-parse", "HEAD", check=False) or "unknown (not a git work tree)"
        else:
            self.commit = self._git("rev-parse", f"{commit or 'HEAD'}^{{commit}}")

    def _git(self, *args: str, check: bool = True) -> str | None:
        flag = ["-C", str(self.path)] if self.checkout else ["--git-dir", str(self.path)]
        proc = subprocess.run(["git", *flag, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            if check:
                raise SystemExit(f"git {' '.join(args)} in {self.path} failed: {proc.stderr.strip()}")
            return None
        return proc.stdout.strip()

    def read(self, rel: str) -> bytes:
        if self.checkout:
            path = self.path / rel
            if not path.is_file():
                raise SystemExit(f"{path} is missing: is {self.path} a checkout of {REPOSITORY}?")
            return path.read_bytes()
        proc = subprocess.run(["git", "--git-dir", str(self.path), "show", f"{self.commit}:{rel}"],
                              capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"{rel} not readable at {self.commit}: {proc.stderr.decode().strip()}")
        return proc.stdout


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_blob_id(data: bytes) -> str:
    """The id git gives these bytes: lets a reader match a file to ``git ls-tree`` output."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _curves(record: dict, where: str) -> dict:
    missing = [k for k in CURVE_KEYS if k not in record]
    if missing:
        raise SystemExit(f"{where}: no {', '.join(missing)} (holds {sorted(record)})")
    curves = {k: [float(v) for v in record[k]] for k in CURVE_KEYS if k != "iteras"}
    curves["iteras"] = [int(v) for v in record["iteras"]]
    epochs = len(curves["train_loss"])
    if not (epochs == len(curves["val_loss"]) == len(curves["times"])):
        raise SystemExit(f"{where}: per-epoch lists of different lengths")
    n_iter = len(curves["iteras"])
    if n_iter % epochs or not (n_iter == len(curves["train_itera_loss"]) == len(curves["train_itera_time"])):
        raise SystemExit(f"{where}: {n_iter} iterations do not split into {epochs} epochs")
    if curves["iteras"] != list(range(1, n_iter + 1)):
        raise SystemExit(f"{where}: iteration numbers are not 1..{n_iter}")
    return curves


def _csv_bytes(columns: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row]
                      for row in rows])
    return buf.getvalue().encode()


def regenerate(repo: AuthorsRepository, out_dir: Path, iteration_epochs: int) -> dict:
    curves_rows, iteration_rows, hyper_rows, sources, checks = [], [], [], [], []
    for dataset, folder, batch in DATASETS:
        for method, name in AUTHORS_NAMES.items():
            rel = f"{RESULTS}/{folder}/outputs_{batch}/{name}.npy"
            data = repo.read(rel)
            sources.append({"path": rel, "sha256": _sha256(data), "git_blob": _git_blob_id(data),
                            "dataset": dataset, "method": method, "kind": "curves"})
            record = read_pickled_npy(data)
            if not isinstance(record, dict):
                raise SystemExit(f"{rel}: holds a {type(record).__name__}, not a dict")
            c = _curves(record, rel)
            epochs = len(c["train_loss"])
            per_epoch = len(c["iteras"]) // epochs
            for e in range(epochs):
                curves_rows.append([dataset, method, e + 1, c["train_loss"][e], c["val_loss"][e], c["times"][e]])
                # their train_loss is the size-weighted mean of the epoch's mini-batch losses
                # (train_mlp.py:192, 221); the plain mean of the stored iteration losses is close
                batch_mean = math.fsum(c["train_itera_loss"][e * per_epoch:(e + 1) * per_epoch]) / per_epoch
                checks.append(abs(batch_mean - c["train_loss"][e]) / c["train_loss"][e])
            for i in range(min(iteration_epochs, epochs) * per_epoch):
                iteration_rows.append([dataset, method, c["iteras"][i], i // per_epoch + 1,
                                       c["train_itera_loss"][i], c["train_itera_time"][i]])

            rel = f"{RESULTS}/{folder}/grid_search/{name}.npy"
            data = repo.read(rel)
            sources.append({"path": rel, "sha256": _sha256(data), "git_blob": _git_blob_id(data),
                            "dataset": dataset, "method": method, "kind": "selected hyperparameters"})
            selected = read_pickled_npy(data)
            unknown = sorted(set(selected) - set(HYPER_COLUMNS[4:]))
            if unknown:
                raise SystemExit(f"{rel}: entries {unknown} have no column in {HYPER_COLUMNS[4:]}")
            # batch_size: of the outputs_<batch> folder the curves come from (not stored in the file)
            hyper_rows.append([dataset, method, name, batch, *(selected.get(k) for k in HYPER_COLUMNS[4:])])

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"authors_curves.csv": _csv_bytes(CURVES_COLUMNS, curves_rows),
               "authors_iterations.csv": _csv_bytes(ITERATION_COLUMNS, iteration_rows),
               "authors_hyperparameters.csv": _csv_bytes(HYPER_COLUMNS, hyper_rows)}
    for name, data in written.items():
        (out_dir / name).write_bytes(data)
    provenance = {
        "repository": REPOSITORY,
        "commit": repo.commit,
        "paper_commit": PAPER_COMMIT,
        "generated_by": "scripts/regenerate_authors_reference.py",
        "method_names": {"ours": "authors' file name", **AUTHORS_NAMES},
        "iteration_epochs": iteration_epochs,
        "check_epoch_mean_of_iteration_losses_max_rel_diff": max(checks),
        "sources": sources,
        "outputs": {name: {"sha256": _sha256(data), "rows": data.count(b"\n") - 1} for name, data in written.items()},
    }
    (out_dir / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("authors_repo", type=Path,
                        help=f"a checkout of {REPOSITORY}, or its git directory (then see --commit)")
    parser.add_argument("--commit", default=None, help="commit to read from a git directory (default HEAD)")
    parser.add_argument("--out", type=Path, default=ROOT / "kfac_bench" / "reference",
                        help="folder to write into (default: %(default)s)")
    parser.add_argument("--iteration-epochs", type=int, default=10,
                        help="epochs of per-iteration losses to keep (default %(default)s; all 200 would be ~10 MB)")
    args = parser.parse_args(argv)
    repo = AuthorsRepository(args.authors_repo, args.commit)
    if repo.commit != PAPER_COMMIT:
        print(f"note: commit {repo.commit} is not the one the project vendors ({PAPER_COMMIT})", file=sys.stderr)
    provenance = regenerate(repo, args.out, args.iteration_epochs)
    for name, info in provenance["outputs"].items():
        print(f"wrote {args.out / name}: {info['rows']} rows, sha256 {info['sha256'][:16]}")
    print(f"wrote {args.out / 'PROVENANCE.json'}: {len(provenance['sources'])} source files at {repo.commit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
