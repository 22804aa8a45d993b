"""`python -m scaling.coordsuite`: every structure's coordinate check, one report (scaling.mup.coordsuite)."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import shlex
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from scaling.mup.coordreport import write_report
from scaling.mup.coordsuite import load_suite, run_suite
from scaling.process import log_to_console


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the suite and write report.md, coord.csv and the plots into `out`; return the summary table."""
    log_to_console()
    args = list(sys.argv[1:] if argv is None else argv)
    suite = load_suite(args)
    torch.set_num_threads(1)  # many small matmuls: one thread is the fast, reproducible choice
    runs, facts = run_suite(suite)
    facts["command"] = shlex.join(["python", "-m", "scaling.coordsuite", *args])
    summary = write_report(suite, runs, facts, Path(suite.out))
    print(summary.to_string(index=False))
    print(f"wrote {Path(suite.out) / 'report.md'}")
    return summary

