"""Forward+backward time of each structured layer against dense nn.Linear at the same width, in one process.

    python bench/layers.py [--widths 256 512 1024] [--tokens 4096] [--structures btt btt:rank=4 ...]
                           [--paths native bmm] [--device cuda] [--precision bf16] [--json]

A structure is a preset of conf/structure/ (its file name), optionally with overrides: `btt:rank=4,cores=2`.
By default every preset whose structure is registered runs (einsum and btt_moe join once they exist), plus
btt:rank=4. Each layer maps d -> d on `tokens` random rows with input gradients on (as inside a network), so one
step is forward + grad-input + grad-weight = 3 x forward FLOPs. Reported per layer: the median step time over
`repeats` after `warmup` steps, achieved GFLOP/s = 3 * flops_per_token * tokens / time, that rate as a fraction
of dense GEMM's, and the wall-time speedup over dense (dense ms / layer ms). Layers of one width take
turns within each repeat, so load drift on a shared machine biases the ratios less.

--paths: the CPU fast paths to time each structure on, side by side: `native` (the default where it is built:
the native offset GEMM, structures/native.py, for the plans it takes) and `bmm` (the PyTorch batched-GEMM
schedule, the path everywhere else; rows marked "[bmm]" when both run). The BTT-MoE router gets random weights
(a zero router would send every token to the same experts). Process settings as in training (bench/common.py):
OMP_WAIT_POLICY=PASSIVE (--omp-wait) and glibc keeping freed memory (--keep-freed-memory).

--device / --precision (bench/common.py): on CUDA (bf16 autocast by default) every structure runs its plain-ops
path and dense is a cuBLAS GEMM of the same shape, so "x dense" is the ratio of achieved TFLOP/s to cuBLAS's.
Under bf16 autocast on the CPU the structures run their plain-ops path too (paths.uses_fast_path).
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
    precision_name,
    resolve_device,
    timed,
)

EXTRA_SPECS = ["btt:rank=4"]
PATHS = {"native": True, "bmm": False}  # PathPolicy.native for each path


@dataclass
class Row:
    width: int
    structure: str  # the spec it was built from; "dense" is nn.Linear
    params: int = 0
    flops_per_token: int = 0  # forward FLOPs (2 x MACs)
    ms: float | None = None  # median forward+backward time
    gflops: float | None = None  # achieved, counting 3 x forward FLOPs
    gflops_vs_dense: float | None = None
    speedup_vs_dense: float | None = None
    error: str = ""


def default_specs() -> list[str]:
    """Every conf/structure preset whose structure is registered (dense is the baseline), then EXTRA_SPECS."""
    from scaling.config.compose import CONF_DIR
    from scaling.structures import REGISTRY

    names = sorted(p.stem for p in (CONF_DIR / "structure").glob("*.yaml"))
    return [n for n in names if n != "dense" and n in REGISTRY] + EXTRA_SPECS


def structure_config(spec: str):
    """`name[:key=value,...]` -> the conf/structure/name preset with structure.key=value overrides."""
    from omegaconf import OmegaConf

    from scaling.config.compose import compose_run_config

    name, _, rest = spec.partition(":")
    overrides = [f"structure={name}"] + [f"structure.{kv}" for kv in rest.split(",") if kv]
    return OmegaConf.to_object(compose_run_config(overrides).structure)


def time_steps(layers: dict, paths: dict[str, bool], args: argparse.Namespace, width: int, device) -> dict:
    """Median seconds of one forward + backward (input and weight gradients) of each layer, each on its path
    (paths[name]: PathPolicy.native). Layers take turns within every repeat, so drifting load on a shared machine
    hits them all alike."""
    import dataclasses

    import torch

    from scaling.structures.fastpath.paths import DEFAULT_POLICY, use_policy
    from scaling.train.device import autocast_for

    x = torch.randn(args.tokens, width, device=device, requires_grad=True)
    grad = torch.randn(args.tokens, width, device=device)
    grads = {grad.dtype: grad}  # the output gradient in each output dtype (bf16 under autocast)

    def step(layer) -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with autocast_for(device, args.precision):
            y = layer(x)
        if y.dtype not in grads:
            grads[y.dtype] = grad.to(y.dtype)
        y.backward(grads[y.dtype])

    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(args.warmup + args.repeats):
        for name, layer in layers.items():
            with use_policy(dataclasses.replace(DEFAULT_POLICY, native=paths[name])):
                seconds = timed(device, lambda layer=layer: step(layer))
            if i >= args.warmup:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_width(width: int, configs: dict, args: argparse.Namespace, device) -> list[Row]:
    """One row per structure and path at this width (a structure that rejects the width gets its error)."""
    import torch
    from torch import nn

    from scaling.structures import StructureError, build_linear

    torch.manual_seed(0)
    layers: dict[str, nn.Module] = {"dense": nn.Linear(width, width, bias=False, device=device)}
    paths = {"dense": False}
    errors: dict[str, str] = {}
    labels = []
    for spec, cfg in configs.items():
        try:
            layer = build_linear(cfg, width, width).to(device)
        except StructureError as err:
            errors[spec] = str(err)
            labels.append(spec)
            continue
        if cfg.name == "btt_moe":
            with torch.no_grad():
                layer.router.weight.normal_(0, width**-0.5)
        for path in args.paths:
            label = spec if path == args.paths[0] else f"{spec} [{path}]"
            layers[label], paths[label] = layer, PATHS[path]
            labels.append(label)
    seconds = time_steps(layers, paths, args, width, device)
    dense_rate = 3 * 2 * width * width * args.tokens / seconds["dense"] / 1e9
    rows = []
    for spec in ["dense", *labels]:
        if spec in errors:
            rows.append(Row(width, spec, error=errors[spec]))
            continue
        layer = layers[spec]
        flops = 2 * width * width if spec == "dense" else layer.flops_per_token()
        params = sum(p.numel() for p in layer.parameters())
        rate = 3 * flops * args.tokens / seconds[spec] / 1e9
        rows.append(
            Row(width, spec, params, flops, seconds[spec] * 1e3, rate, rate / dense_rate,
                seconds["dense"] / seconds[spec])
        )
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'width':>6} {'structure':<22} {'params':>9} {'MFLOP/tok':>10} {'ms':>9} {'GFLOP/s':>8} {'x dense':>8} "
          f"{'speedup':>8}")
    for r in rows:
        if r.error:
            print(f"{r.width:>6} {r.structure:<22} skipped: {r.error}")
            continue
        print(
            f"{r.width:>6} {r.structure:<22} {r.params:>9} {r.flops_per_token / 1e6:>10.3f} {r.ms:>9.2f} "
            f"{r.gflops:>8.1f} {r.gflops_vs_dense:>8.2f} {r.speedup_vs_dense:>8.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--structures", nargs="+", default=None,
                        help="specs name[:key=value,...]; default: all presets")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=None,
                        help="CPU fast paths to time (default: native and bmm where native is built, else bmm)")
    add_device_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    apply_process_settings(args.omp_wait, args.keep_freed_memory, "bench/layers.py")
    import torch

    from scaling.structures import REGISTRY
    from scaling.structures.fastpath.paths import native_runs

    device = resolve_device(args.device)
    precision = precision_name(device, args.precision)
    if device.type != "cpu" or precision == "bf16":
        if args.paths is not None:
            sys.exit(f"--paths chooses between the CPU fp32 paths; on {device.type} in {precision} every structure "
                     "runs its plain-ops path")
        args.paths = ["bmm"]  # native off, which has no effect there
    elif args.paths is None:
        args.paths = ["native", "bmm"] if native_runs() else ["bmm"]
    elif "native" in args.paths and not native_runs():
        sys.exit("--paths native: the native offset GEMM is not built, not usable here or switched off by "
                 "SCALING_NATIVE=0 (see structures/native.py)")
    torch.set_num_threads(args.threads)
    specs = args.structures or default_specs()
    unknown = [s for s in specs if s.partition(":")[0] not in REGISTRY]
    if unknown:
        sys.exit(f"--structures: {unknown} are not registered structures; choose from {sorted(REGISTRY)}")
    configs = {spec: structure_config(spec) for spec in specs}
    rows = [row for width in args.widths for row in bench_width(width, configs, args, device)]
    if args.json:
        meta = {"tokens": args.tokens, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                "paths": args.paths, "omp_wait": args.omp_wait, "keep_freed_memory": args.keep_freed_memory,
                "device": device.type, "precision": precision}
        print(json.dumps({**meta, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}))
    else:
        print(f"fwd+bwd of one d -> d layer, {args.tokens} tokens, {device.type} {precision}, {args.threads} threads, "
              f"median of {args.repeats}, OMP wait {args.omp_wait}, keep freed memory {args.keep_freed_memory}")
        print_table(rows)


if __name__ == "__main__":
    main()
