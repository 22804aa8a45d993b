"""Training throughput (tokens/s) of GPT-2 with dense vs structured linear layers, measured in one process.

    python bench/train.py [--width 512] [--depth 4] [--context 128] [--batch 16] [--vocab 256]
                          [--structures btt low_rank kron] [--layers all_but_last] [--repeats 5]
                          [--device cuda] [--precision fp32 bf16] [--peak-tflops 989] [--layers-free] [--json]

Each model is built and initialised by the project's parametrisation (scaling.mup.parametrization) and trained by its
AdamW on one shared random batch. A repeat runs one optimiser step (forward, backward, step) of every model in
turn, in every precision (in an order shuffled every repeat, bench/common.py shuffled), so drifting load on a
shared machine hits them alike; a model's step time is its median over repeats. Reported per model and precision:
parameters, training FLOPs per token (3 x the forward FLOPs of scaling.models.flops: linear layers and attention),
tokens/s, achieved GFLOP/s, and the speedup over dense in the same precision (dense step time / the model's). The
machine's measured copy bandwidth is printed as its own row.

A structure is a conf/structure preset with optional overrides, as in bench/layers.py: `btt:rank=4`.

Device and precision as in training (--device, --precision; bench/common.py): --precision takes one or more of fp32
and bf16 (autocast; default both, side by side); on a GPU, --device cuda. Two utilisation columns: "x GEMM", the
model's achieved FLOP/s over a large dense matmul's (--gemm-size, same device and precision, measured in this
process; 1024 on the CPU, whose bf16 matmuls run at a fiftieth of fp32's without AMX), and "MFU", over the hardware peak
(--peak-tflops, or the data-sheet bf16 peak of a known GPU; blank when unknown, as on CPUs). --layers-free adds, per
structure, a row "NAME [layers free]": the same model with its structured layers replaced by a stand-in that costs
next to nothing (zeros out, zeros back), so its speedup is the most that faster structured layers alone could give
over dense; the rest of the step (attention, norms, activations, the optimiser) bounds it. --compile [BACKEND] times
every model under torch.compile (inductor by default) instead of eager (give --warmup >= 1: the first step
compiles).
Threads and process settings (--threads, --omp-wait, --keep-freed-memory): bench/common.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass

from common import (
    add_common_arguments,
    add_device_arguments,
    apply_process_settings,
    copy_bandwidth,
    dense_gemm_flops,
    peak_tflops,
    precisions,
    resolve_device,
    shuffled,
    timed,
)

DEFAULT_SPECS = ["btt", "low_rank", "kron"]
FREE = "[layers free]"


@dataclass
class Row:
    structure: str  # the spec it was built from; "dense" is the all-dense baseline
    precision: str
    params: int
    train_flops_per_token: int  # 3 x forward (linear layers + attention)
    step_ms: float  # median optimiser step
    tokens_per_s: float
    gflops: float
    speedup_vs_dense: float
    x_gemm: float  # achieved FLOP/s over a large dense matmul's on the same device and precision
    mfu: float | None  # achieved FLOP/s over the hardware peak (None when the peak is unknown)


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
    parser.add_argument("--gemm-size", type=int, default=None,
                        help="side of the dense matmul behind 'x GEMM' (default 1024 on the CPU, 8192 on CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="hardware peak for MFU, TFLOP/s")
    parser.add_argument("--layers-free", action="store_true",
                        help="also time each structured model with its structured layers free (the speedup's bound)")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="time every model under torch.compile with this backend (default inductor); its "
                             "compilation falls in the warm-up steps")
    add_device_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("width", "depth", "context", "batch", "vocab", "head_dim", "repeats", "threads", "gemm_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    apply_process_settings(args.omp_wait, args.keep_freed_memory, "bench/train.py")
    rows, setting = run(args)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        print(json.dumps({**settings, **setting, "rows": [asdict(r) for r in rows]}))
    else:
        gemms = ", ".join(f"{p} {t:.3g}" for p, t in setting["gemm_tflops"].items())
        print(
            f"GPT-2 d={args.width} L={args.depth} T={args.context} B={args.batch} vocab={args.vocab}, "
            f"layers={args.layers}, {setting['device_name']} {' and '.join(setting['precisions'])}, "
            f"{args.threads} threads, OMP wait {args.omp_wait}, keep freed memory {args.keep_freed_memory}; median of "
            f"{args.repeats} steps; dense {setting['gemm_size']}^3 matmul TFLOP/s {gemms}, "
            f"peak {setting['peak_tflops'] or 'unknown'}"
        )
        print_table(rows, setting["copy_gbs"])


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    """Build every model, time alternating optimiser steps on one batch, and summarise (imports torch).
    Returns the rows and the setting they were measured in (device, precision, reference GEMM, peak)."""
    import torch
    from omegaconf import OmegaConf

    from scaling.config.schema import ModelConfig, StructureConfig
    from scaling.config.compose import compose_run_config
    from scaling.data.interface import DataInfo
    from scaling.models.flops import model_flops
    from scaling.mup.parametrization import build_parametrized_model, make_optimizer
    from scaling.structures import REGISTRY
    from scaling.train.device import autocast_for

    unknown = [s for s in args.structures if s.partition(":")[0] not in REGISTRY]
    if unknown:
        sys.exit(f"--structures: {unknown} are not registered structures; choose from {sorted(REGISTRY)}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
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
    if args.layers_free:
        specs |= {f"{spec} {FREE}": cfg for spec, cfg in specs.items() if spec != "dense"}
    models, optimizers, flops, params = {}, {}, {}, {}
    for spec, cfg in specs.items():
        model, rules = build_parametrized_model(model_cfg, cfg, info)
        if spec.endswith(FREE) and not free_structured_layers(model):
            sys.exit(f"--layers-free: {spec.removesuffix(' ' + FREE)} has no structured layers to free")
        models[spec] = torch.compile(model.to(device), backend=args.compile) if args.compile else model.to(device)
        optimizers[spec] = make_optimizer(model, rules, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
        report = model_flops(model, info)
        flops[spec], params[spec] = report.train_flops_per_unit, report.params
    x = torch.randint(0, args.vocab, (args.batch, args.context), device=device)
    y = torch.randint(0, args.vocab, (args.batch, args.context), device=device)

    def step(spec: str, precision: str) -> None:
        with autocast_for(device, precision):
            _, loss = models[spec](x, y)
            aux = models[spec].aux_loss()
        optimizers[spec].zero_grad(set_to_none=True)
        (loss if aux is None else loss + specs[spec].aux_weight * aux).backward()
        optimizers[spec].step()

    used = precisions(device, args.precision)
    times: dict[tuple[str, str], list[float]] = {(spec, p): [] for spec in specs for p in used}
    for i in range(args.warmup + args.repeats):
        for spec, precision in shuffled(list(times), i):
            seconds = timed(device, lambda: step(spec, precision))
            if i >= args.warmup:
                times[spec, precision].append(seconds)
    gemm_size = args.gemm_size or (8192 if device.type == "cuda" else 1024)
    gemm_rates = {p: dense_gemm_flops(device, p, gemm_size) for p in used}
    tokens = args.batch * args.context
    rows = []
    for precision in used:
        peak = peak_tflops(device, precision, args.peak_tflops)
        dense_s = statistics.median(times["dense", precision])
        for spec in specs:
            seconds = statistics.median(times[spec, precision])
            rate = flops[spec] * tokens / seconds
            rows.append(
                Row(spec, precision, params[spec], flops[spec], seconds * 1e3, tokens / seconds, rate / 1e9,
                    dense_s / seconds, rate / gemm_rates[precision], None if peak is None else rate / (peak * 1e12))
            )
    setting = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
               "precisions": used, "gemm_size": gemm_size,
               "gemm_tflops": {p: rate / 1e12 for p, rate in gemm_rates.items()},
               "peak_tflops": peak_tflops(device, used[-1], args.peak_tflops),
               "copy_gbs": copy_bandwidth(device) / 1e9, "torch": torch.__version__}
    return rows, setting


def free_structured_layers(model) -> int:
    """Give every structured (not dense) linear layer of model a stand-in forward that returns zeros of its output
    shape, in the dtype the layer would return, and zero gradients for its input and parameters; the zeros are made
    once per shape and reused (read-only), so the stand-in costs no memory traffic. Returns how many layers."""
    import torch

    from scaling.structures.base import StructuredLinear

    zeros: dict[tuple, torch.Tensor] = {}

    def zeros_like(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (tuple(shape), dtype, device)
        if key not in zeros:
            zeros[key] = torch.zeros(shape, dtype=dtype, device=device)
        return zeros[key]

    class Free(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor, d_out: int, *params: torch.Tensor) -> torch.Tensor:
            device = x.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
            ctx.inputs = [(t.shape, t.dtype, t.device) for t in (x, *params)]
            return zeros_like((*x.shape[:-1], d_out), dtype, x.device)

        @staticmethod
        def backward(ctx, dy: torch.Tensor):
            x_grad, *param_grads = (zeros_like(*spec) for spec in ctx.inputs)
            return x_grad, None, *param_grads

    layers = [m for m in model.modules() if isinstance(m, StructuredLinear) and m.structure != "dense"]
    for layer in layers:
        layer.forward = lambda x, layer=layer: Free.apply(x, layer.d_out, *layer.parameters())
    return len(layers)


def print_table(rows: list[Row], copy_gbs: float) -> None:
    header = ("structure", "prec", "params", "MFLOP/tok", "step ms", "tokens/s", "GFLOP/s", "speedup", "x GEMM", "MFU")
    print(f"{header[0]:<18} {header[1]:<5} "
          + " ".join(f"{h:>{w}}" for h, w in zip(header[2:], (10, 10, 9, 9, 8, 8, 7, 6))))
    for r in rows:
        mfu = "" if r.mfu is None else f"{r.mfu:.1%}"
        print(
            f"{r.structure:<18} {r.precision:<5} {r.params:>10} {r.train_flops_per_token / 1e6:>10.2f} "
            f"{r.step_ms:>9.1f} {r.tokens_per_s:>9.0f} {r.gflops:>8.1f} {r.speedup_vs_dense:>8.2f} {r.x_gemm:>7.2f} "
            f"{mfu:>6}"
        )
    print(f"{'copy bandwidth':<18} {'':<5} {copy_gbs:>10.1f} GB/s (read + write)")


if __name__ == "__main__":
    main()
