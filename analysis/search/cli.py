"""`python -m analysis.search +search=NAME`: run a structure search round by round through the launcher.

    python -m analysis.search +search=structure_search                  # run it locally, then write its report
    python -m analysis.search +search=structure_search dry_run=true     # the first round's runs and the compute plan
    python -m analysis.search +search=my.yaml cluster=slurm cluster.partition=gpu   # rounds as Slurm arrays

Own options: search_dir=DIR (searches looked up there first), results_root=DIR (default $SCALING_RESULTS or
results), out=DIR (the report; default RESULTS_ROOT/searches/NAME), workers=N (fit processes). Every other
argument goes to the launcher of each round (cluster=..., retry_failed=true, ...). Rerunning the command resumes:
finished runs are kept and every decision is replayed from them. Bad input: one `error:` line, exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from analysis.errors import AnalysisError
from analysis.search.driver import Driver, RoundPending, default_out
from analysis.search.report import write_search_report
from analysis.search.spec import load_search
from scaling.process import log_to_console
from scaling.store.results import DirectoryError, checked_root

OWN = ("search", "search_dir", "results_root", "out", "dry_run", "workers")
logger = logging.getLogger(__name__)


def parse_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """This command's options and the launcher's arguments."""
    own, rest = {}, []
    for arg in args:
        key, eq, value = arg.lstrip("+").partition("=")
        if key in OWN and eq:
            own[key] = value
        else:
            rest.append(arg)
    if "search" not in own:
        raise AnalysisError("no search given: pass +search=NAME (a file in searches/ or search_dir) or "
                            "+search=path/to/search.yaml", "search")
    if own.get("dry_run", "false").lower() not in ("true", "false"):
        raise AnalysisError(f"dry_run={own['dry_run']}: give true or false", "dry_run")
    if "workers" in own and not (own["workers"].isdigit() and int(own["workers"]) > 0):
        raise AnalysisError(f"workers={own['workers']}: give a positive number of processes", "workers")
    return own, rest


def main(argv: Sequence[str] | None = None) -> int:
    log_to_console()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        own, rest = parse_args(args)
        spec = load_search(own["search"], [own["search_dir"]] if "search_dir" in own else [])
        dry = own.get("dry_run", "false").lower() == "true"
        root = checked_root(own.get("results_root") or os.environ.get("SCALING_RESULTS") or "results", write=True)
        driver = Driver(spec, str(root), rest, int(own["workers"]) if "workers" in own else None)
        if dry:
            for line in driver.dry_run():
                print(line)
            return 0
        run = driver.run()
        path = write_search_report(run, own.get("out") or default_out(root, spec.name), driver.workers)
    except (AnalysisError, DirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RoundPending as err:
        print(f"search not finished: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as err:  # the launcher's note says what still runs
        print(str(err) or "interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    print(f"winner set: {', '.join(run.trace.winners) or 'none'}; report {path}")
    return 0
