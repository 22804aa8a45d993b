"""The callable each submitit job runs: a batch of runs, trained one after another in one process."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import os
import time
from typing import Any

import submitit
from omegaconf import OmegaConf

from scaling.process import log_to_console
from scaling.store.lease import live_holder
from scaling.store.results import read_summary, run_dir, run_id
from scaling.store.states import RunState
from scaling.train.loop import train


class RunBatch(submitit.helpers.Checkpointable):
    """Train each run config in turn. On timeout/preemption submitit requeues this same batch; finished
    runs are then skipped and the interrupted one resumes from its checkpoint."""

    def __init__(self, configs: list[dict[str, Any]]):
        self.configs = configs

    def __call__(self) -> list[dict[str, Any]]:
        log_to_console()  # the runs' step lines and notes, in the job's stdout/stderr logs
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            submitit.helpers.TorchDistributedEnvironment().export()
        summaries, failures = [], []
        # cooldown branches last, each once its trunk has finished (trained here if no job holds it)
        for config in sorted(self.configs, key=lambda c: _trunk_of(c) is not None):
            try:
                if _trunk_of(config):
                    self._await_trunk(config)
                summaries.append(train(OmegaConf.create(config)))
            except Exception as err:  # the run recorded status=failed; go on with the others
                failures.append(f"run {run_id(config)}: {type(err).__name__}: {err}")
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(self.configs)} runs failed:\n" + "\n".join(failures))
        return summaries

    def _await_trunk(self, branch: dict[str, Any], poll_s: float = 5.0) -> None:
        """Return once the branch's trunk has completed: wait while another job trains it, train it here when
        none does (it is in this batch), fail when it ended otherwise or is nowhere to be trained."""
        trunk_id = _trunk_of(branch)
        rdir = run_dir(branch["results_root"], trunk_id)
        while True:
            summary = read_summary(rdir)
            status = summary["status"] if summary else None
            if status == RunState.COMPLETED:
                return
            if status in (RunState.DIVERGED, RunState.FAILED):
                raise RuntimeError(f"its cooldown trunk {trunk_id} ended {status}; fix and retrain the trunk "
                                   "(launch with retry_failed=true), then the branch")
            if live_holder(rdir) is None:
                trunk = next((c for c in self.configs if run_id(c) == trunk_id), None)
                if trunk is None:
                    raise RuntimeError(f"its cooldown trunk {trunk_id} is not trained and not in this job; launch "
                                       "the sweep again (it trains trunks before their branches)")
                train(OmegaConf.create(trunk))
            else:
                time.sleep(poll_s)


def _trunk_of(config: dict[str, Any]) -> str | None:
    return config["train"].get("fork_from")
