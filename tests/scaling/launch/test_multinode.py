"""Multi-node DDP through submitit (`cluster.nodes`), as far as one machine shows it: the sbatch script submitit
generates, and the DDP environment each Slurm task derives from Slurm's variables, trained for real."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from scaling.config.compose import compose_run_config
from scaling.launch.submit import make_executor
from scaling.store.results import read_jsonl, read_summary, run_dir, run_id
from scaling.launch.sweeps import SweepError, compose_launch_config
from scaling.train.loop import train
from sweep_fixtures import REPO, TINY_BASE

TASK = """
import os, sys
from omegaconf import OmegaConf
from scaling.launch.jobs import RunBatch
[summary] = RunBatch([OmegaConf.to_container(OmegaConf.load(sys.argv[1]))])()
print(*(os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")),
      summary["status"])
"""


def cluster_cfg(*overrides: str):
    return compose_launch_config(["+sweep=quickstart", "cluster=slurm", *overrides]).cluster


def test_two_node_job_script(tmp_path):
    cluster = cluster_cfg("cluster.nodes=2", "cluster.tasks_per_node=4", "cluster.gpus_per_node=4",
                          "cluster.partition=gpu", "cluster.cpus_per_task=8")
    executor = make_executor(cluster, tmp_path / "%j")
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")
    sbatch = {line.split("=")[0]: line.split("=", 1)[1] for line in script.splitlines()
              if line.startswith("#SBATCH") and "=" in line}
    assert sbatch["#SBATCH --nodes"] == "2" and sbatch["#SBATCH --ntasks-per-node"] == "4"
    assert sbatch["#SBATCH --gpus-per-node"] == "4" and sbatch["#SBATCH --cpus-per-task"] == "8"
    assert sbatch["#SBATCH --partition"] == "gpu" and sbatch["#SBATCH --signal"] == "USR2@120"
    [srun] = [line for line in script.splitlines() if line.startswith("srun")]
    assert "python -u -m submitit.core._submit FOLDER" in srun  # one task per GPU on every node
    assert executor._executor._num_tasks() == 8


def test_nodes_need_slurm(tmp_path):
    for kind in ("local", "debug"):
        cfg = compose_launch_config(["+sweep=quickstart", f"cluster={kind}"]).cluster
        cfg.nodes = 2
        with pytest.raises(SweepError, match="cluster.nodes=2 is not possible with cluster=" + kind):
            make_executor(cfg, tmp_path)


def job_id_with_free_port() -> str:
    """A Slurm job id whose DDP port (submitit derives it from the job id) is free on this machine."""
    for job_id in range(4242, 4342):
        port = random.Random(str(job_id)).randint(20000, 60000)  # submitit's TorchDistributedEnvironment rule
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(job_id)
    raise RuntimeError("no free port among 100 job ids")


@pytest.mark.slow
def test_tasks_of_a_two_node_job_train_one_ddp_run(tmp_path):
    """Two processes with the Slurm variables of the two tasks of a 2-node job (one task per node) join one DDP
    group through RunBatch, as submitit starts them, and give the single-process loss curve."""
    overrides = [*TINY_BASE, "structure=btt", "train.tokens=8192", "train.log_every=1"]
    cfg = compose_run_config([*overrides, f"results_root={tmp_path / 'two'}"])
    config_file = tmp_path / "run.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg))
    job_id = job_id_with_free_port()
    tasks = []
    for rank in range(2):
        # what submitit's sbatch script and Slurm's srun set for task `rank` (SUBMITIT_EXECUTOR: the script's)
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
                   SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=job_id, SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2",
                   SLURM_JOB_NODELIST="localhost", SLURM_NODEID=str(rank), SLURM_PROCID=str(rank),
                   SLURM_LOCALID="0")
        tasks.append(subprocess.Popen([sys.executable, "-c", TASK, str(config_file)], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [task.communicate(timeout=300) for task in tasks]
    for rank, (task, (out, err)) in enumerate(zip(tasks, outputs)):
        assert task.returncode == 0, err
        # the DDP environment this task derived from Slurm's variables: one of 2 ranks, one per node
        assert out.split()[-6:] == [str(rank), "2", "0", "1", "localhost", "completed"]
    rid = run_id(cfg)
    assert read_summary(run_dir(tmp_path / "two", rid))["status"] == "completed"

    single = compose_run_config([*overrides, f"results_root={tmp_path / 'one'}"])
    train(single)
    one = read_jsonl(run_dir(tmp_path / "one", rid) / "metrics.jsonl")
    two = read_jsonl(run_dir(tmp_path / "two", rid) / "metrics.jsonl")

    def curve(rows, kind, key):
        return [r[key] for r in rows if r["kind"] == kind]

    assert curve(two, "train", "step") == curve(one, "train", "step") == list(range(1, 33))
    assert curve(two, "train", "loss") == pytest.approx(curve(one, "train", "loss"), rel=1e-4, abs=1e-5)
    assert curve(two, "eval", "val_loss") == pytest.approx(curve(one, "eval", "val_loss"), rel=1e-4, abs=1e-5)
