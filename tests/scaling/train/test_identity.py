"""One run id, one result: what changes the numbers (device, precision, thread count) is resolved before the id is
taken and is part of it, and a committed reference run reproduces its final loss bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from scaling.config.compose import compose_run_config
from scaling.launch.submit import check_threads
from scaling.launch.sweeps import SweepError, expand, runs_on_cuda
from scaling.store.results import run_id
from scaling.train.plan import plan_run
from sweep_fixtures import TINY_BASE, tiny_sweep

REPO = Path(__file__).resolve().parents[3]
# The reference run: a BTT GPT-2 small enough to train in seconds, pinned to 1 thread and fp32 on the CPU. Its id
# and final loss are committed; a change to either means the same config no longer gives the same result, which
# is a new run (a new id) or a bug. Changing them on purpose (a fix that changes the numbers) updates both here.
REFERENCE = ["structure=btt", *TINY_BASE, "train.tokens=8192", "train.warmup_tokens=512", "train.device=cpu",
             "train.precision=auto", "train.threads=1"]
REFERENCE_ID = "ae7849abdbc0f2e7"
# float.hex of summary.json's final_val_loss, per the CPU kernels torch dispatches to: MKL's AVX2 and AVX-512
# kernels round differently (1 float32 ulp here), so a run is one result on one instruction set
REFERENCE_FINAL_LOSS = {"AVX2": "0x1.a7d4f58000000p+1", "AVX512": "0x1.a7d4f5c000000p+1"}


def test_auto_device_and_precision_are_resolved_into_the_config_before_the_id():
    cpu = compose_run_config(["model.width=64"])
    gpu = compose_run_config(["model.width=64"])
    plan_run(cpu, cuda=False), plan_run(gpu, cuda=True)
    assert (cpu.train.device, cpu.train.precision) == ("cpu", "fp32")
    assert (gpu.train.device, gpu.train.precision) == ("cuda", "bf16")
    assert run_id(cpu) != run_id(gpu)
    explicit = compose_run_config(["model.width=64", "train.device=cpu", "train.precision=fp32"])
    assert plan_run(explicit).run_id == run_id(cpu)  # auto resolved = the same run spelled out


def test_which_cuda_device_is_not_part_of_the_id_but_the_thread_count_is():
    def rid(*overrides: str) -> str:
        return run_id(compose_run_config(["model.width=64", "train.precision=bf16", *overrides]))

    assert rid("train.device=cuda:0") == rid("train.device=cuda:1") == rid("train.device=cuda")
    assert rid("train.device=cuda") != rid("train.device=cpu")
    assert rid("train.threads=1") != rid("train.threads=2")


def test_a_launcher_resolves_auto_for_the_machines_its_jobs_run_on():
    slurm_gpu = OmegaConf.create({"kind": "slurm", "gpus_per_node": 1})
    slurm_cpu = OmegaConf.create({"kind": "slurm", "gpus_per_node": 0})
    assert runs_on_cuda(slurm_gpu) is True and runs_on_cuda(slurm_cpu) is False
    assert runs_on_cuda(OmegaConf.create({"kind": "local", "gpus_per_node": 0})) is None  # this machine decides
    sweep = OmegaConf.create(tiny_sweep())
    on_gpu = expand(sweep, cuda=True)
    assert {r.cfg.train.device for r in on_gpu.runs} == {"cuda"}
    assert {r.cfg.train.precision for r in on_gpu.runs} == {"bf16"}
    assert not {r.plan.run_id for r in on_gpu.runs} & {r.plan.run_id for r in expand(sweep, cuda=False).runs}


def test_a_job_needs_the_cpus_its_runs_compute_with():
    expansion = expand(OmegaConf.create(tiny_sweep(base=[*TINY_BASE, "train.threads=2"])), cuda=False)
    with pytest.raises(SweepError, match=r"train.threads=2 is more than cluster.cpus_per_task=1.*"
                                         r"cluster.cpus_per_task=2"):
        check_threads(expansion, OmegaConf.create({"kind": "local", "cpus_per_task": 1}))
    check_threads(expansion, OmegaConf.create({"kind": "local", "cpus_per_task": 2}))


TRAIN_REFERENCE = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))  # what the process was given; the run's config pins its own
from scaling.config.compose import compose_run_config
from scaling.train.loop import train
summary = train(compose_run_config(json.loads(sys.argv[1])))
print(json.dumps({"run_id": summary["run_id"], "final": float(summary["final_val_loss"]).hex()}))
"""


@pytest.mark.slow
def test_the_reference_run_reproduces_its_committed_final_loss_bit_for_bit(tmp_path):
    results = []
    for process_threads in (1, 2):  # the process's own setting must not matter: the run pins train.threads
        args = json.dumps([*REFERENCE, f"results_root={tmp_path / str(process_threads)}"])
        done = subprocess.run([sys.executable, "-c", TRAIN_REFERENCE, args, str(process_threads)], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0]["run_id"] == REFERENCE_ID
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in REFERENCE_FINAL_LOSS:
        pytest.skip(f"no committed final loss for CPU capability {capability}: add {results[0]['final']}")
    assert results[0]["final"] == REFERENCE_FINAL_LOSS[capability]
