"""Forward+backward time of each structured layer against dense nn.Linear at the same width, in one process.

    python bench/layers.py [--widths 256 512 1024] [--tokens 4096] [--structures btt btt:rank=4 ...] [--json]

A structure is a preset of conf/structure/ (its file name), optionally with overrides: `btt:rank=4,cores=2`.
By default every preset whose structure is registered runs (einsum and btt_moe join once they exist), plus
btt:rank=4. Each layer maps d -> d on `tokens` random rows with input gradients on (as inside a network), so one
step is forward + grad-input + grad-weight = 3 x forward FLOPs. Reported per layer: the median step time over
`repeats` after `warmup` steps, achieved GFLOP/s = 3 * flops_per_token * tokens / time, that rate as a fraction
of dense GEMM's, and the wall-time speedup over dense (dense ms / layer ms). Layers of one width take
turns within each repeat, so load drift on a shared machine biases the ratios less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from scaling.config import StructureConfig
from scaling.configs import CONF_DIR, compose_run_config
from scaling.structures import REGISTRY, StructureError, build_linear

EXTRA_SPECS = ["btt:rank=4"]


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
    names = sorted(p.stem for p in (CONF_DIR / "structure").glob("*.yaml"))
    return [n for n in names if n != "dense" and n in REGISTRY] + EXTRA_SPECS


def structure_config(spec: str) -> StructureConfig:
    """`name[:key=value,...]` -> the conf/structure/name preset with structure.key=value overrides."""
    name, _, rest = spec.partition(":")
    overrides = [f"structure={name}"] + [f"structure.{kv}" for kv in rest.split(",") if kv]
    return OmegaConf.to_object(compose_run_config(overrides).structure)


def time_steps(layers: dict[str, nn.Module], tokens: int, width: int, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of one forward + backward (input and weight gradients) of each layer.

    Layers take turns within every repeat, so drifting load on a shared machine hits them all alike.
    """
    x = torch.randn(tokens, width, requires_grad=True)
    grad = torch.randn(tokens, width)
    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(warmup + repeats):
        for name, layer in layers.items():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            start = time.perf_counter()
            layer(x).backward(grad)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_width(width: int, configs: dict[str, StructureConfig], args: argparse.Namespace) -> list[Row]:
    torch.manual_seed(0)
    layers: dict[str, nn.Module] = {"dense": nn.Linear(width, width, bias=False)}
    errors: dict[str, str] = {}
    for spec, cfg in configs.items():
        try:
            layers[spec] = build_linear(cfg, width, width)
        except StructureError as err:
            errors[spec] = str(err)
    seconds = time_steps(layers, args.tokens, width, args.warmup, args.repeats)
    dense_rate = 3 * 2 * width * width * args.tokens / seconds["dense"] / 1e9
    rows = []
    for spec in ["dense", *configs]:
        if spec in errors:
            rows.append(Row(width, spec, error=errors[spec]))
            continue
        layer = layers[spec]
        flops = 2 * width * width if spec == "dense" else layer.flops_per_token()
        params = sum(p.numel() for p in layer.parameters())
        rate = 3 * flops * args.tokens / seconds[spec] / 1e9
        rows.append(
            Row(width, spec, params, flops, seconds[spec] * 1e3, rate, rate / dense_rate, seconds["dense"] / seconds[spec])
        )
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'width':>6} {'structure':<18} {'params':>9} {'MFLOP/tok':>10} {'ms':>9} {'GFLOP/s':>8} {'x dense':>8} {'speedup':>8}")
    for r in rows:
        if r.error:
            print(f"{r.width:>6} {r.structure:<18} skipped: {r.error}")
            continue
        print(
            f"{r.width:>6} {r.structure:<18} {r.params:>9} {r.flops_per_token / 1e6:>10.3f} {r.ms:>9.2f} "
            f"{r.gflops:>8.1f} {r.gflops_vs_dense:>8.2f} {r.speedup_vs_dense:>8.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--structures", nargs="+", default=None, help="specs name[:key=value,...]; default: all presets")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = args.structures or default_specs()
    unknown = [s for s in specs if s.partition(":")[0] not in REGISTRY]
    if unknown:
        sys.exit(f"--structures: {unknown} are not registered structures; choose from {sorted(REGISTRY)}")
    configs = {spec: structure_config(spec) for spec in specs}
    rows = [row for width in args.widths for row in bench_width(width, configs, args)]
    if args.json:
        meta = {"tokens": args.tokens, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats}
        print(json.dumps({**meta, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}))
    else:
        print(f"fwd+bwd of one d -> d layer, {args.tokens} tokens, {args.threads} threads, median of {args.repeats}")
        print_table(rows)


if __name__ == "__main__":
    main()
