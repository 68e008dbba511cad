"""The command line in a process of its own, forked from a warm server that has already imported torch,
Hydra and kfac_bench (multiprocessing's ``forkserver``: nothing has run in it before the fork, so no
OpenMP pool is forked half-alive).

Each call keeps what a fresh ``python -m kfac_bench.cli ...`` has: its own process, exit status, stdout,
stderr, environment and working folder; it skips the ~2 s import of torch a fresh interpreter pays
(two thirds of the suite's time went to those imports). Tests that kill or race processes, or that
check what a fresh interpreter does, keep using ``subprocess``.
"""
import importlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ENTRY_POINTS = {"kfac-bench": "kfac_bench.cli:main", "reproduce_paper.py": "kfac_bench.reproduce:main"}
FRESH_COMMANDS = {"kfac-bench": [sys.executable, "-m", "kfac_bench.cli"],
                  "reproduce_paper.py": [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts"
                                                             / "reproduce_paper.py")]}
_PRELOAD = ["torch", "hydra", "omegaconf", "pandas", "matplotlib.pyplot", "kfac_bench.cli",
            "kfac_bench.reproduce", "kfac_bench.runs.train"]
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)    # sys.exit("message"), as the interpreter prints it
    return 1


def _redirect(fd, path):
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)


def _child(entry, args, env, cwd, out_path, err_path):
    _redirect(1, out_path)
    _redirect(2, err_path)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    code = 1
    try:
        if env.get("OMP_NUM_THREADS"):      # OpenMP read it when the server loaded torch: say it again
            import torch
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        module, function = ENTRY_POINTS[entry].split(":")
        sys.argv = [entry, *args]
        try:
            code = _exit_code(getattr(importlib.import_module(module), function)())
        except SystemExit as stop:
            code = _exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    sys.exit(code)       # through multiprocessing's own exit: its finalizers release what the run made


def run(entry, *args, env=None, cwd=None, timeout=600, fresh=False):
    """Like ``subprocess.run([entry, *args], capture_output=True, text=True, ...)`` for ``entry`` one of
    ENTRY_POINTS; returns a CompletedProcess, raises TimeoutExpired. ``fresh=True``: a new interpreter
    (for a run whose launcher starts pools of its own: joblib's loky hangs in a forked child)."""
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    if fresh:
        return subprocess.run(FRESH_COMMANDS[entry] + [str(a) for a in args], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=timeout)
    with tempfile.TemporaryDirectory() as folder:
        out_path, err_path = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = _forkserver().Process(target=_child, args=(entry, [str(a) for a in args], env, cwd,
                                                               out_path, err_path))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([entry, *args], timeout)
        if not os.path.exists(err_path):
            raise RuntimeError(f"the warm server's child died before running {entry} (exit {process.exitcode})")
        with open(out_path) as out, open(err_path) as err:
            return subprocess.CompletedProcess([entry, *args], process.exitcode, out.read(), err.read())
