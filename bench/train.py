"""Training throughput (tokens/s) of GPT-2 with dense vs structured linear layers, measured in one process.

    python bench/train.py [--width 512] [--depth 4] [--context 128] [--batch 16] [--vocab 256]
                          [--structures btt low_rank kron] [--layers all_but_last] [--repeats 5] [--json]

Each model is built and initialised by the project's parametrisation (scaling.parametrization) and trained by its
AdamW on one shared random batch. A repeat runs one optimiser step (forward, backward, step) of every model in
turn, so drifting load on a shared machine hits them alike; a model's step time is its median over repeats.
Reported per model: parameters, training FLOPs per token (3 x the forward FLOPs of scaling.flops: linear layers
and attention), tokens/s, achieved GFLOP/s, and the speedup over dense (dense step time / the model's).

A structure is a conf/structure preset with optional overrides, as in bench/layers.py: `btt:rank=4`.

Process settings, identical for every model and applied before torch starts (they act on the whole process;
both defaults are what training uses too, scaling/process.py):
  --omp-wait passive   OMP_WAIT_POLICY: idle OpenMP threads sleep at once instead of spinning. On a shared
                       2-core machine a spinning thread takes the core its partner needs, which stalls every
                       parallel region; models that issue many medium-sized ops (structured layers) suffer most.
  --keep-freed-memory  glibc malloc keeps freed memory for reuse (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)
                       instead of returning it to the OS, so each step's large activations do not page-fault anew
                       (page faults are expensive in this sandbox). Off with --no-keep-freed-memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

OMP_WAIT = {"passive": "PASSIVE", "active": "ACTIVE"}
DEFAULT_SPECS = ["btt", "low_rank", "kron"]


@dataclass
class Row:
    structure: str  # the spec it was built from; "dense" is the all-dense baseline
    params: int
    train_flops_per_token: int  # 3 x forward (linear layers + attention)
    step_ms: float  # median optimiser step
    tokens_per_s: float
    gflops: float
    speedup_vs_dense: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--vocab", type=int, default=256, help="byte-level vocabulary by default")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--structures", nargs="+", default=DEFAULT_SPECS, help="specs name[:key=value,...]")
    parser.add_argument("--layers", default="all_but_last", help="structure.layers: which linear maps are structured")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("width", "depth", "context", "batch", "vocab", "head_dim", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--threads, the process settings (--omp-wait, --keep-freed-memory) and --json: shared by every benchmark."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait", choices=sorted(OMP_WAIT), default="passive")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def apply_process_settings(omp_wait: str, keep_memory: bool, script: str) -> None:
    """Set OMP_WAIT_POLICY (before torch is imported) and glibc's reuse of freed memory; exits if too late."""
    if "torch" in sys.modules:
        sys.exit(f"--omp-wait must take effect before torch is imported; run {script} as a script")
    os.environ["OMP_WAIT_POLICY"] = OMP_WAIT[omp_wait]
    from scaling.process import keep_freed_memory

    if keep_memory and not keep_freed_memory():
        sys.exit("--keep-freed-memory: glibc mallopt refused the settings; rerun with --no-keep-freed-memory")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    apply_process_settings(args.omp_wait, args.keep_freed_memory, "bench/train.py")
    rows = run(args)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        print(json.dumps({**settings, "rows": [asdict(r) for r in rows]}))
    else:
        print(
            f"GPT-2 d={args.width} L={args.depth} T={args.context} B={args.batch} vocab={args.vocab}, "
            f"layers={args.layers}, {args.threads} threads, OMP wait {args.omp_wait}, "
            f"keep freed memory {args.keep_freed_memory}; median of {args.repeats} steps"
        )
        print_table(rows)


def run(args: argparse.Namespace) -> list[Row]:
    """Build every model, time alternating optimiser steps on one batch, and summarise (imports torch)."""
    import torch
    from omegaconf import OmegaConf

    from scaling.config import ModelConfig, StructureConfig
    from scaling.configs import compose_run_config
    from scaling.data.base import DataInfo
    from scaling.flops import model_flops
    from scaling.parametrization import build_parametrized_model, make_optimizer
    from scaling.structures import REGISTRY

    unknown = [s for s in args.structures if s.partition(":")[0] not in REGISTRY]
    if unknown:
        sys.exit(f"--structures: {unknown} are not registered structures; choose from {sorted(REGISTRY)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    info = DataInfo(kind="text", unit="token", vocab_size=args.vocab)
    model_cfg = ModelConfig(
        family="gpt2", width=args.width, base_width=args.width, depth=args.depth, head_dim=args.head_dim,
        context=args.context,
    )
    specs = {"dense": StructureConfig(name="dense")}
    for spec in args.structures:  # `name[:key=value,...]` -> the conf/structure/name preset with overrides
        name, _, rest = spec.partition(":")
        overrides = [f"structure={name}", f"structure.layers={args.layers}"]
        overrides += [f"structure.{kv}" for kv in rest.split(",") if kv]
        specs[spec] = OmegaConf.to_object(compose_run_config(overrides).structure)
    models, optimizers, flops, params = {}, {}, {}, {}
    for spec, cfg in specs.items():
        model, rules = build_parametrized_model(model_cfg, cfg, info)
        models[spec] = model
        optimizers[spec] = make_optimizer(model, rules, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
        report = model_flops(model, info)
        flops[spec], params[spec] = report.train_flops_per_unit, report.params
    x = torch.randint(0, args.vocab, (args.batch, args.context))
    y = torch.randint(0, args.vocab, (args.batch, args.context))
    times: dict[str, list[float]] = {spec: [] for spec in specs}
    for i in range(args.warmup + args.repeats):
        for spec, model in models.items():
            start = time.perf_counter()
            _, loss = model(x, y)
            aux = model.aux_loss()
            optimizers[spec].zero_grad(set_to_none=True)
            (loss if aux is None else loss + specs[spec].aux_weight * aux).backward()
            optimizers[spec].step()
            if i >= args.warmup:
                times[spec].append(time.perf_counter() - start)
    tokens = args.batch * args.context
    dense_s = statistics.median(times["dense"])
    rows = []
    for spec in specs:
        step = statistics.median(times[spec])
        rows.append(
            Row(spec, params[spec], flops[spec], step * 1e3, tokens / step, flops[spec] * tokens / step / 1e9,
                dense_s / step)
        )
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("structure", "params", "MFLOP/tok", "step ms", "tokens/s", "GFLOP/s", "speedup")
    print(f"{header[0]:<18} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], (10, 10, 9, 9, 8, 8))))
    for r in rows:
        print(
            f"{r.structure:<18} {r.params:>10} {r.train_flops_per_token / 1e6:>10.2f} {r.step_ms:>9.1f} "
            f"{r.tokens_per_s:>9.0f} {r.gflops:>8.1f} {r.speedup_vs_dense:>8.2f}"
        )


if __name__ == "__main__":
    main()
