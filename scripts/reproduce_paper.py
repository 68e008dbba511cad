#!/usr/bin/env python
"""`make reproduce-paper`: a thin entry point; the logic is :mod:`kfac_bench.reproduce` (see its docstring).

    python scripts/reproduce_paper.py --profile authors            # = make reproduce-paper
    python scripts/reproduce_paper.py --profile fair --dry-run     # the plan and its estimate only
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's package, installed or not

from kfac_bench.reproduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
