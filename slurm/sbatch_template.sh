#!/usr/bin/env bash
# One training run as a plain sbatch job, for those who prefer sbatch to `python -m scaling.launch cluster=slurm`.
#
#   sbatch slurm/sbatch_template.sh model=gpt2 structure=btt model.width=256 train.tokens=4000000
#
# Every argument is a Hydra override passed to `python -m scaling.train`. Run sbatch from the repository root with
# the project's environment active (sbatch exports your environment; set PYTHON=/path/to/venv/bin/python to pick
# another interpreter). Copy this file and edit the #SBATCH lines for your cluster, or override any of them on the
# command line (`sbatch --partition=gpu --gpus=1 --time=12:00:00 slurm/sbatch_template.sh ...`).
# A line starting with `##SBATCH` is a comment that sbatch ignores: drop one `#` to turn it on.
#
# Preemption and time limits: Slurm sends USR2 to this script 120 s before the time limit (--signal=B:USR2@120),
# and a preempting scheduler can send it too (`scancel --signal=USR2 --batch JOBID` does the same by hand).
# The script then requeues the job (--requeue), Slurm stops the run with SIGTERM (then SIGKILL after KillWait),
# and the requeued job resumes the same run from its last checkpoint: the run directory is the hash of the resolved
# config, so the same overrides find it again. At most $MAX_REQUEUES requeues (default 5) guard against loops.
#
#SBATCH --job-name=scaling-train
#SBATCH --partition=debug
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
##SBATCH --gpus=1
##SBATCH --account=MY_ACCOUNT
##SBATCH --qos=MY_QOS
#SBATCH --signal=B:USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

PYTHON="${PYTHON:-python}"
MAX_REQUEUES="${MAX_REQUEUES:-5}"
attempt="${SLURM_RESTART_COUNT:-0}"

cd "${SLURM_SUBMIT_DIR:-.}"
# Torch uses one thread per allocated CPU (it would otherwise count every CPU of the node).
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
# Results and wandb files go where the run config says (results_root, logger.*); keep them on a shared filesystem.

# shellcheck disable=SC2317  # called by the USR2 trap
requeue() {
    if ((attempt >= MAX_REQUEUES)); then
        echo "sbatch_template: got USR2 but already requeued $attempt times (MAX_REQUEUES=$MAX_REQUEUES); not requeuing"
        return
    fi
    echo "sbatch_template: got USR2 on attempt $attempt; requeuing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
}
trap requeue USR2

echo "sbatch_template: job ${SLURM_JOB_ID:-?} attempt $attempt on $(hostname): $PYTHON -m scaling.train $*"
# Run in the background and wait: bash runs a trap only between commands, and `wait` returns when a signal arrives.
"$PYTHON" -m scaling.train "$@" &
train_pid=$!
status=0
while true; do
    wait "$train_pid" && status=0 || status=$?
    kill -0 "$train_pid" 2>/dev/null || break   # the trainer exited; a live one means a signal ended the wait
done
echo "sbatch_template: scaling.train exited with status $status"
exit "$status"
