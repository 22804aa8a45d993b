"""BTT-MoE: time of top-k routing against computing every expert, forward + backward, in one process.

    python bench/moe.py [--widths 512 1024] [--tokens 4096] [--experts 8] [--top-k 2] [--json]

Two layers with the same experts and the same random router: one routes each token to its top-k experts (only
those run), the other to all E experts (top_k = E: every expert on every token, the cost a dense mixture pays).
They take turns within every repeat; reported per width: median fwd+bwd time of each, the time ratio
routed / all, and the FLOP ratio the analytic counts predict (router + k/E of the experts). Process settings as
in bench/common.py (OMP_WAIT_POLICY=PASSIVE, glibc keeping freed memory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import add_common_arguments, apply_process_settings


def time_pair(width: int, args: argparse.Namespace) -> dict:
    """Median seconds of fwd+bwd of the routed and the all-experts layer at this width."""
    import torch

    from scaling.config.schema import StructureConfig
    from scaling.structures import build_linear

    torch.manual_seed(0)
    routed = build_linear(StructureConfig("btt_moe", experts=args.experts, top_k=args.top_k), width, width)
    every = build_linear(StructureConfig("btt_moe", experts=args.experts, top_k=args.experts), width, width)
    with torch.no_grad():
        routed.router.weight.normal_(0, width**-0.5)  # a zero router would send every token to the same experts
        every.load_state_dict(routed.state_dict())
    x = torch.randn(args.tokens, width, requires_grad=True)
    grad = torch.randn(args.tokens, width)
    layers = {"routed": routed, "all": every}
    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(args.warmup + args.repeats):
        for name, layer in layers.items():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            start = time.perf_counter()
            layer(x).backward(grad)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        "width": width, "routed_ms": ms["routed"], "all_ms": ms["all"], "time_ratio": ms["routed"] / ms["all"],
        "flop_ratio": routed.flops_per_token() / every.flops_per_token(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.top_k < args.experts:
        parser.error(f"--top-k must be between 1 and --experts - 1 = {args.experts - 1}, got {args.top_k}")
    apply_process_settings(args.omp_wait, args.keep_freed_memory, "bench/moe.py")
    import torch

    torch.set_num_threads(args.threads)
    rows = [time_pair(width, args) for width in args.widths]
    if args.json:
        print(json.dumps({"experts": args.experts, "top_k": args.top_k, "tokens": args.tokens, "rows": rows}))
        return
    print(f"BTT-MoE {args.experts} experts, top-{args.top_k} vs all experts: fwd+bwd, {args.tokens} tokens, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'width':>6} {'routed ms':>10} {'all ms':>8} {'time ratio':>11} {'FLOP ratio':>11}")
    for r in rows:
        print(f"{r['width']:>6} {r['routed_ms']:>10.1f} {r['all_ms']:>8.1f} {r['time_ratio']:>11.2f} "
              f"{r['flop_ratio']:>11.2f}")


if __name__ == "__main__":
    main()
