"""The callable each submitit job runs: a batch of runs, trained one after another in one process."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import os
from typing import Any

import submitit
from omegaconf import OmegaConf

from scaling.process import log_to_console
from scaling.store.results import run_id
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
        for config in self.configs:
            try:
                summaries.append(train(OmegaConf.create(config)))
            except Exception as err:  # the run recorded status=failed; go on with the others
                failures.append(f"run {run_id(config)}: {type(err).__name__}: {err}")
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(self.configs)} runs failed:\n" + "\n".join(failures))
        return summaries
