"""Time a full analysis report over a few thousand synthetic runs with 1000 bootstrap replicates per fit.

    .venv/bin/python bench/analysis.py [--structures 22] [--replicates 1000] [--keep DIR]

Writes the synthetic run directories first (not timed), then times load + every fit + plots + report in
this process and prints the seconds. The issue's bar: under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the analysis package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from analysis.io.load import load_results  # noqa: E402
from analysis.report.build import analyse  # noqa: E402
from analysis.report.write import write_report  # noqa: E402
from analysis.io.synthetic import Law, SyntheticStructure, SyntheticSweep  # noqa: E402
from analysis.fit.taxonomy import coordinates  # noqa: E402

# Small-scale laws (losses of 2-4 nats for 1e5-1e8 parameters), dense first.
SMALL = Law(E=1.2, A=60.0, B=90.0, alpha=0.34, beta=0.28)
NAMED = [
    SyntheticStructure("dense", SMALL),
    SyntheticStructure("btt", Law(1.2, 52.0, 90.0, 0.36, 0.28)),
    SyntheticStructure("monarch", Law(1.2, 58.0, 90.0, 0.34, 0.28)),
    SyntheticStructure("low_rank", Law(1.22, 62.0, 90.0, 0.33, 0.28)),
    SyntheticStructure("kron", Law(1.3, 66.0, 90.0, 0.27, 0.28), params_ratio=0.1, lr_drift=0.5),
    SyntheticStructure("tt", Law(1.28, 64.0, 90.0, 0.29, 0.28), params_ratio=0.2),
]
# (alpha, beta, gamma, delta, epsilon, phi, rho): low-rank, BTT/Monarch, BTT with rank, TT/Kron-like, generic.
THETAS = [
    (1, 0, 0, 0, 1, 0, 0.25), (1, 0, 0, 0, 1, 0, 0.5), (1, 0, 0, 0, 1, 0, 0.75),
    (0.5, 0, 0.5, 0, 0.5, 0.5, 0), (0.5, 0, 0.5, 0, 0.5, 0.5, 0.25), (1 / 3, 0, 2 / 3, 0, 2 / 3, 1 / 3, 0.25),
    (0.25, 0, 0.75, 0, 0.75, 0.25, 0), (0.75, 0, 0.25, 0, 0.25, 0.75, 0), (0.5, 0.5, 0, 0.5, 0.5, 0, 0),
    (0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0), (0.5, 0, 0.5, 0, 0.5, 0.5, 0.5), (0.6, 0.2, 0.2, 0.2, 0.6, 0.2, 0.1),
    (0.4, 0.3, 0.3, 0.3, 0.4, 0.3, 0), (0.5, 0, 0.5, 0.25, 0.25, 0.5, 0), (0.5, 0.25, 0.25, 0, 0.5, 0.5, 0.1),
    (1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0),
]


def einsum_structure(theta: tuple[float, ...]) -> SyntheticStructure:
    """A law whose N-exponent falls with parameter sharing (omega) and with lost rank (1 - psi)."""
    c = coordinates(theta)
    alpha = 0.34 * (1 - 0.5 * c.omega) * (0.7 + 0.3 * min(c.psi, 1.0))
    return SyntheticStructure("einsum", Law(1.2, 60.0, 90.0, alpha, 0.28), params_ratio=2 ** -c.omega,
                              theta=tuple(float(t) for t in theta))


def sweep(structures: int) -> SyntheticSweep:
    chosen = (NAMED + [einsum_structure(t) for t in THETAS])[:structures]
    return SyntheticSweep(chosen, budgets=tuple(1e13 * 2.0 ** k for k in range(10)), sizes_per_budget=9,
                          repeat_seeds=3, lr_widths=(64, 128, 256), seed=0)


def cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes (the fits and plots run in a pool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=len(NAMED) + len(THETAS))
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--keep", type=Path, help="write runs and report here and keep them")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="analysis_bench_"))
    try:
        results, out = work / "results", work / "report"
        if not (results / "runs").is_dir():
            sweep(args.structures).write(results)
        wall, cpu = [time.perf_counter()], [cpu_seconds()]
        table = load_results(results)
        wall.append(time.perf_counter()), cpu.append(cpu_seconds())
        report = analyse(table, str(results), replicates=args.replicates, workers=args.workers)
        wall.append(time.perf_counter()), cpu.append(cpu_seconds())
        write_report(report, out, workers=args.workers)
        wall.append(time.perf_counter()), cpu.append(cpu_seconds())
        print(f"runs: {len(table.runs)} used, {len(table.excluded)} excluded; structures: {args.structures}; "
              f"bootstrap replicates per fit: {args.replicates}")
        for name, i in (("load", 1), ("fits", 2), ("plots + report", 3)):
            print(f"{name}: {wall[i] - wall[i - 1]:.1f} s wall, {cpu[i] - cpu[i - 1]:.1f} s CPU")
        print(f"full report: {wall[-1] - wall[0]:.1f} s wall ({cpu[-1] - cpu[0]:.1f} s CPU; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
