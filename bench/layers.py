"""Forward+backward time of each structured layer against dense nn.Linear at the same width, in one process.

    python bench/layers.py [--widths 256 512 1024] [--tokens 4096] [--structures btt btt:rank=4 ...]
                           [--paths native bmm] [--device cuda] [--precision fp32 bf16] [--json]

A structure is a preset of conf/structure/ (its file name), optionally with overrides: `btt:rank=4,cores=2`.
By default every preset whose structure is registered runs (einsum and btt_moe join once they exist), plus
btt:rank=4. Each layer maps d -> d on `tokens` random rows with input gradients on (as inside a network), so one
step is forward + grad-input + grad-weight = 3 x forward FLOPs. Reported per layer and precision: the median step
time over `repeats` after `warmup` steps, achieved GFLOP/s = 3 * flops_per_token * tokens / time, that rate as a
fraction of dense GEMM's in the same precision, the wall-time speedup over dense in the same precision (dense ms /
layer ms), and the memory-traffic limit: the time to move the activations a fwd+bwd must move at the measured copy
bandwidth (`limit_ms`: tokens x (3 d_in + 2 d_out) elements: the forward reads x and writes y, the backward reads
dy and x again and writes dx; 4 bytes each in fp32, 2 in bf16; weights are negligible). The copy bandwidth
(bench/common.py copy_bandwidth) is printed as its own row. Layers of one width take turns within each repeat,
precisions included, so load drift on a shared machine biases the ratios less, in an order shuffled every
repeat (bench/common.py shuffled), so none always runs right after the same one.

--precision: one or more of fp32 and bf16 (default both, side by side): bf16 is CPU/CUDA bf16 autocast, with the
input and output gradient in bf16 (what the previous and next autocast ops hand over). On the CPU the structures
run their fused paths in both (scaling/structures/fastpath/paths.py: under bf16 the GEMMs run in bf16 where the
CPU has AMX or AVX512-BF16, else in fp32 on the bf16-rounded operands); dense is nn.Linear under autocast.

--paths: the CPU fast paths to time each structure on, side by side: `native` (the default policy where the C
extensions are built: in fp32 the offset GEMM, structures/fastpath/native.py, in bf16 on an AMX CPU the AMX kernel,
structures/fastpath/amx.py, each for the plans it takes) and `bmm` (the PyTorch batched-GEMM schedule, the path
everywhere else; rows marked "[bmm]" when both run). The BTT-MoE router gets random weights (a zero router would
send every token to the same experts). Process settings as in training (bench/common.py): OMP_WAIT_POLICY=PASSIVE
(--omp-wait) and glibc keeping freed memory (--keep-freed-memory).

--device cuda (bench/common.py): every structure runs its plain-ops path and dense is a cuBLAS GEMM of the same
shape, so "x dense" is the ratio of achieved TFLOP/s to cuBLAS's.
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
    precisions,
    resolve_device,
    shuffled,
    timed,
)

EXTRA_SPECS = ["btt:rank=4"]
PATHS = {"native": {}, "bmm": {"native": False, "amx": False}}  # each path's changes to the default PathPolicy
BYTES = {"fp32": 4, "bf16": 2}
COPY_MB = 256  # size of the copy that measures the memory bandwidth: larger than the caches


@dataclass
class Row:
    width: int
    structure: str  # the spec it was built from; "dense" is nn.Linear
    precision: str = "fp32"
    path: str = ""  # the path label it ran on (bench_width's `paths`, or "compiled"); "" for dense
    params: int = 0
    flops_per_token: int = 0  # forward FLOPs (2 x MACs)
    ms: float | None = None  # median forward+backward time
    gflops: float | None = None  # achieved, counting 3 x forward FLOPs
    gflops_vs_dense: float | None = None
    speedup_vs_dense: float | None = None
    limit_ms: float | None = None  # memory-traffic limit at the measured copy bandwidth
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


def time_steps(layers: dict, policies: dict, args: argparse.Namespace, width: int, device) -> dict:
    """Median seconds of one forward + backward (input and weight gradients) of each layer in each precision, keyed
    (name, precision), each under its path policy (policies[name]). Layers and precisions take turns within every
    repeat, so drifting load on a shared machine hits them all alike."""
    import torch

    from scaling.structures.fastpath.paths import use_policy
    from scaling.train.device import autocast_for

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    x32, grad = torch.randn(args.tokens, width, device=device), torch.randn(args.tokens, width, device=device)
    inputs = {p: x32.to(dtypes[p]).requires_grad_(True) for p in args.precision}
    grads = {p: grad.to(dtypes[p]) for p in args.precision}

    def step(layer, precision: str) -> None:
        x = inputs[precision]
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with autocast_for(device, precision):
            y = layer(x)
        y.backward(grads[precision].to(y.dtype))

    times: dict[tuple[str, str], list[float]] = {(n, p): [] for n in layers for p in args.precision}
    for i in range(args.warmup + args.repeats):
        for name, precision in shuffled(list(times), i):
            with use_policy(policies[name]):
                seconds = timed(device, lambda: step(layers[name], precision))
            if i >= args.warmup:
                times[name, precision].append(seconds)
    return {key: statistics.median(t) for key, t in times.items()}


def path_policies(names: list[str]) -> dict:
    """--paths as bench_width takes them: each CPU path name with its PathPolicy (the default, or native and amx
    off)."""
    import dataclasses

    from scaling.structures.fastpath.paths import DEFAULT_POLICY

    return {name: dataclasses.replace(DEFAULT_POLICY, **PATHS[name]) for name in names}


def bench_width(width: int, configs: dict, args: argparse.Namespace, device, bandwidth: float, paths: dict,
                compiled: tuple[str, ...] = (), backend: str = "inductor") -> list[Row]:
    """One row per structure, path and precision at this width (a structure that rejects the width gets its
    error); bandwidth (bytes/s) gives each row's memory-traffic limit. paths: {label: PathPolicy}, the first
    unlabelled in the rows; the specs in `compiled` also run under torch.compile with `backend` (the default
    policy)."""
    import torch
    from torch import nn

    from scaling.structures import StructureError, build_linear
    from scaling.structures.fastpath.paths import DEFAULT_POLICY

    torch.manual_seed(0)
    layers: dict[str, nn.Module] = {"dense": nn.Linear(width, width, bias=False, device=device)}
    policies, path_of = {"dense": DEFAULT_POLICY}, {"dense": ""}
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
        variants = [(path, layer, policy) for path, policy in paths.items()]
        variants += [("compiled", torch.compile(layer, backend=backend), DEFAULT_POLICY)] if spec in compiled else []
        for path, module, policy in variants:
            label = spec if path == next(iter(paths)) else f"{spec} [{path}]"
            layers[label], policies[label], path_of[label] = module, policy, path
            labels.append(label)
    seconds = time_steps(layers, policies, args, width, device)
    rows = []
    for precision in args.precision:
        dense_s = seconds["dense", precision]
        dense_rate = 3 * 2 * width * width * args.tokens / dense_s / 1e9
        limit_ms = args.tokens * 5 * width * BYTES[precision] / bandwidth * 1e3
        for spec in ["dense", *labels]:
            if spec in errors:
                rows.append(Row(width, spec, precision, error=errors[spec]))
                continue
            layer, s = getattr(layers[spec], "_orig_mod", layers[spec]), seconds[spec, precision]
            flops = 2 * width * width if spec == "dense" else layer.flops_per_token()
            params = sum(p.numel() for p in layer.parameters())
            rate = 3 * flops * args.tokens / s / 1e9
            rows.append(Row(width, spec, precision, path_of[spec], params, flops, s * 1e3, rate, rate / dense_rate,
                            dense_s / s, limit_ms))
    return rows


def print_table(rows: list[Row], bandwidth: float) -> None:
    print(f"{'width':>6} {'structure':<22} {'prec':<5} {'params':>9} {'MFLOP/tok':>10} {'ms':>9} {'GFLOP/s':>8} "
          f"{'x dense':>8} {'speedup':>8} {'limit ms':>9}")
    for r in rows:
        if r.error:
            print(f"{r.width:>6} {r.structure:<22} {r.precision:<5} skipped: {r.error}")
            continue
        print(
            f"{r.width:>6} {r.structure:<22} {r.precision:<5} {r.params:>9} {r.flops_per_token / 1e6:>10.3f} "
            f"{r.ms:>9.2f} {r.gflops:>8.1f} {r.gflops_vs_dense:>8.2f} {r.speedup_vs_dense:>8.2f} {r.limit_ms:>9.2f}"
        )
    print(f"{'':>6} {'copy bandwidth':<22} {'':<5} {bandwidth / 1e9:>9.1f} GB/s (read + write, "
          f"{COPY_MB} MB copied; limit ms = tokens x 5 d x bytes / this)")


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
    args.precision = precisions(device, args.precision)
    if device.type != "cpu":
        if args.paths is not None:
            sys.exit(f"--paths chooses between the CPU paths; on {device.type} every structure runs its plain-ops "
                     "path")
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
    bandwidth = copy_bandwidth(device, COPY_MB)
    paths = path_policies(args.paths)
    rows = [row for width in args.widths for row in bench_width(width, configs, args, device, bandwidth, paths)]
    if args.json:
        meta = {"tokens": args.tokens, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                "paths": args.paths, "omp_wait": args.omp_wait, "keep_freed_memory": args.keep_freed_memory,
                "device": device.type, "precisions": args.precision, "copy_gbs": bandwidth / 1e9}
        print(json.dumps({**meta, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}))
    else:
        print(f"fwd+bwd of one d -> d layer, {args.tokens} tokens, {device.type} {' and '.join(args.precision)}, "
              f"{args.threads} threads, median of {args.repeats}, OMP wait {args.omp_wait}, keep freed memory "
              f"{args.keep_freed_memory}")
        print_table(rows, bandwidth)


if __name__ == "__main__":
    main()
