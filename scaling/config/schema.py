"""Structured configs: the typed schema every run config is validated against.

Hydra composes `conf/` into a `RunConfig`; a typo'd key or a wrong type fails with the key's name.
One run is a pure function of `model`, `structure`, `data` and `train` (see `scaling.store.results.run_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# The choices of the settings whose implementations live further down the pipeline; each implementing module
# takes its tuple from here, so validation (scaling.config.validate) needs nothing above the config stage.
PARAMETRIZATIONS = ("structure_aware", "naive", "standard")  # scaling.mup.parametrization
SCHEDULES = ("cosine", "constant", "wsd")  # scaling.train.schedule
LAYOUTS = ("paper", "balanced")  # scaling.structures.factorize
TOKENIZERS = ("byte", "char", "bpe", "gpt2")  # scaling.data.tokenizers
LOGGER_MODES = ("online", "offline", "disabled")  # scaling.train.tracking


@dataclass
class StructureConfig:
    """Which structure replaces which linear layers, and the structure's own settings."""

    name: str = "dense"  # a key of scaling.structures.REGISTRY
    # Which roles get the structure: all | all_but_last | intermediate | ffn | attn | a list of roles.
    layers: Any = "all_but_last"
    rank: Optional[int] = None  # low_rank (absolute rank), btt/btt_norm (BTT rank), tt (TT rank)
    rank_frac: Optional[float] = None  # low_rank: rank as a fraction of min(d_in, d_out)
    cores: int = 2  # kron / tt: number of factors (cores)
    # btt / btt_norm / btt_moe / kron / tt: how a width splits into factors. paper: the reference code's greedy
    # prime split (512 -> 16 x 32; BTT reads d_in as m1 blocks of m0 <= m1). balanced: the most nearly equal
    # split, and BTT's smaller input factor as the block count (the project's layout before issue 11).
    layout: str = "paper"
    blocks: Optional[int] = None  # monarch: number of blocks (None: round(sqrt(d_in)))
    theta: Optional[list[float]] = None  # einsum: (alpha, beta, gamma, delta, epsilon, phi, rho)
    experts: int = 8  # btt_moe: number of experts (rank slices)
    top_k: int = 2  # btt_moe: experts used per token
    aux_weight: float = 0.01  # btt_moe / moe FFN: weight of the load-balancing + z loss


@dataclass
class ModelConfig:
    """A model family and its shape. Widths are the residual-stream width d."""

    family: str = "gpt2"  # gpt2 | vit | mlp
    width: int = 128
    base_width: int = 128  # muP base: lr multipliers and init are relative to this width
    depth: int = 2
    head_dim: int = 64  # heads = width // head_dim
    ffn_ratio: float = 4.0
    context: int = 128  # gpt2: sequence length
    qk_norm: bool = False
    attn_scale: float = 8.0  # attention logits are q.k * attn_scale / head_dim (muP with the papers' constant 8)
    tie_head: bool = False  # gpt2: share the token embedding with the unembedding
    bias: bool = False
    # vit
    patch_size: int = 4
    pool: str = "cls"  # cls | mean
    # gpt2 FFN-level mixture of experts baseline (0 = plain FFN)
    ffn_experts: int = 0
    ffn_top_k: int = 2
    input_lr_mult: float = 1.0  # extra lr multiplier of the input layer (mlp `input`, vit `patch_embed`)
    # structure_aware | naive (every factor gets the dense rule) | standard (no muP: 1/sqrt(fan_in), lr mult 1)
    parametrization: str = "structure_aware"


@dataclass
class DataConfig:
    """Where examples come from. For text the training unit is a token; for images/regression an example."""

    kind: str = "text"  # text | image | teacher
    name: str = "shakespeare"  # text: shakespeare | owt | files; image: fashion_mnist | cifar10 | cifar100
    path: Optional[str] = None  # local files / dataset root; None uses the default cache
    # prepared data (token caches, downloads): $SCALING_DATA_DIR, else $XDG_CACHE_HOME/scaling (~/.cache/scaling),
    # never the current directory; not part of a run's identity
    cache_dir: str = """${oc.env:SCALING_DATA_DIR,'${oc.env:XDG_CACHE_HOME,"~/.cache"}/scaling'}"""
    tokenizer: str = "byte"  # byte | char | bpe | gpt2
    vocab_size: int = 512  # bpe: size of the locally trained vocabulary
    val_fraction: float = 0.05
    augment: bool = True  # images: random crop + flip on training data
    flatten: bool = False  # images: present as flat vectors (for the MLP family)
    # teacher (synthetic regression)
    input_dim: int = 8
    teacher_width: int = 1024
    teacher_depth: int = 6
    teacher_seed: int = 0
    eval_examples: int = 4096


@dataclass
class TrainConfig:
    """How one run trains: budget, optimiser, schedule, evaluation, checkpointing."""

    tokens: int = 262_144  # budget in training units (tokens for text, examples otherwise)
    flops: Optional[float] = None  # alternative budget in training FLOPs; overrides `tokens`
    batch_size: int = 16  # sequences / examples per optimiser step (global, across ranks)
    lr: float = 3e-3
    schedule: str = "cosine"  # cosine | constant | wsd
    # linear warmup over this many training units (tokens for text, examples otherwise): fixed in units, not a
    # fraction of the run, so a curve read at a smaller budget had the same warmup as a run trained to it
    warmup_tokens: int = 65_536
    decay_frac: float = 0.2  # wsd: fraction of steps spent decaying
    # cooldown branches (a sweep's `budgets.cooldown`): a constant-LR trunk keeps a checkpoint at each of its
    # snapshot_steps, and a wsd run with fork_from (the trunk's run id) starts from the one at its decay's start
    snapshot_steps: list[int] = field(default_factory=list)
    fork_from: Optional[str] = None
    min_lr_frac: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_points: int = 8  # number of log-spaced evaluations (plus the final one)
    eval_flops: list[float] = field(default_factory=list)  # also evaluate at these budgets (set by sweeps)
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every_s: float = 300.0
    seed: int = 0
    # Where and how the run computes; each changes the numbers, so each is part of the run id. `auto` is resolved
    # before the id is computed (scaling.train.plan.resolve_runtime) and config.yaml holds the resolved value.
    device: str = "auto"  # auto (cuda when the run's machine has one) | cpu | cuda | cuda:<index>
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU: docs/configuration.md) | fp32 | bf16
    threads: int = 1  # CPU threads (torch.set_num_threads): the thread count changes the order of float sums
    diverge_factor: float = 4.0  # loss above diverge_factor * initial loss (or non-finite) ends the run


def resolve_device(device: str, precision: str, cuda: bool) -> tuple[str, str]:
    """train.device and train.precision with `auto` replaced: the device by cuda (if the machine has one, `cuda`)
    or cpu; the precision by bf16 on CUDA and fp32 on the CPU. Explicit values are kept."""
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if precision == "auto":
        precision = "bf16" if str(device).startswith("cuda") else "fp32"
    return device, precision


@dataclass
class LoggerConfig:
    """wandb settings; mode None defers to WANDB_MODE, and to `offline` if that is unset too."""

    mode: Optional[str] = None  # online | offline | disabled
    project: str = "structured-scaling"
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    results_root: str = "${oc.env:SCALING_RESULTS,results}"
    sweep: Optional[str] = None  # name of the sweep this run belongs to (not part of its identity)
    # the sweep variant it was launched as (scaling.config.labels; not part of its identity)
    label: Optional[str] = None


@dataclass
class ClusterConfig:
    """Where jobs run: `local` (processes here), `debug` (in this process) or `slurm` (job arrays)."""

    kind: str = "local"  # local | debug | slurm
    runs_per_job: Optional[int] = None  # runs packed into one job; None: slurm 1, local one job per parallel slot
    parallel_jobs: Optional[int] = None  # local: jobs at once (None: CPUs // cpus_per_task); slurm: array %N
    wait: bool = True  # block until every job ends (slurm default false: use scaling.status)
    timeout_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    tasks_per_node: int = 1  # slurm, >1: DistributedDataParallel across the tasks (one per GPU); local: 1
    nodes: int = 1  # slurm: >1 runs each job's DDP over nodes x tasks_per_node tasks
    mem_gb: Optional[float] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    max_num_timeout: int = 3  # requeues allowed after time limits / preemptions
    signal_delay_s: int = 120  # USR2 this long before the time limit, so the run checkpoints
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # extra sbatch options
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, ...)


@dataclass
class LaunchConfig:
    """`python -m scaling.launch +sweep=NAME [options]`."""

    sweep: Any = None  # filled by +sweep=NAME (sweeps/NAME.yaml)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dry_run: bool = False
    retry_failed: bool = False
    overrides: list[str] = field(default_factory=list)  # run overrides applied to every run of the sweep
    results_root: str = "${oc.env:SCALING_RESULTS,results}"
    estimate_time: bool = True  # dry run: measure throughput for configs with no recorded runs
    max_runs: int = 2000  # a sweep that expands to more runs is refused before any is composed (raise it here)
