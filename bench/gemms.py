"""Where a two-core layer's time goes: each GEMM of the native path's schedule against dense GEMM, one process.

    python bench/gemms.py [--width 1024] [--tokens 4096] [--rank 1] [--tile 32] [--json]

A BTT layer (d -> d, given rank) runs six GEMMs per training step on the native path (scaling/structures/
token_major.py): core 1 and core 2 forward; dw1, dz, dw0 and dx backward (which also runs core 1 again, to
recompute z). Each is timed alone (as a chain of one GEMM over all tokens, tile by tile, its middle operand a
per-thread scratch tile as in the layer), alternating with a dense d x d GEMM on the same tokens, in two settings:
`hot`, repeating the GEMM back to back so its operands stay in cache, and `cold`, with the dense GEMM in
between (it sweeps the caches, as the rest of a network does). Reported: each GEMM's achieved GFLOP/s as a
fraction of dense GEMM's. The shares show where a layer's time goes (the weight gradients, which sum over
tokens and read one cache line per token per block) and why its rate stays below dense's.
Process settings as in bench/common.py (OMP_WAIT_POLICY=PASSIVE, glibc keeping freed memory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from common import add_common_arguments, apply_process_settings

NAMES = ["core1", "core2", "dw1", "dz", "dw0", "dx"]


def median_seconds(run, between, repeats: int) -> float:
    """Median time of run(), with between() (untimed) before each call."""
    times = []
    for i in range(repeats + 1):
        between()
        start = time.perf_counter()
        run()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(args: argparse.Namespace) -> list[dict]:
    import torch

    from scaling.config.schema import StructureConfig
    from scaling.structures.fastpath import native
    from scaling.structures.btt import BlockTensorTrain, btt_plan
    from scaling.structures.fastpath.token_major import token_major_plan

    lay = BlockTensorTrain.validate(StructureConfig(name="btt", rank=args.rank), args.width, args.width)
    plan = btt_plan(lay.m1, lay.m0, lay.n0, lay.n1, args.rank)
    tm = token_major_plan(plan)
    t, d, threads = args.tokens, args.width, torch.get_num_threads()
    torch.manual_seed(0)
    x, g = torch.randn(t, d), torch.randn(t, d)
    w0, w1 = torch.randn(plan.core1[:3]), torch.randn(plan.core2[:3])
    z, dz = tm.scratch(x, args.tile).normal_(), tm.scratch(x, args.tile).normal_()  # no denormals from garbage
    y, dx = torch.empty(t, d), torch.empty(t, d)
    dw0, dw1t = torch.zeros(threads, *plan.core1[:3]), torch.zeros(threads, plan.core2[0], plan.core2[2], plan.core2[1])
    backward = tm.backward_ops(g, x, w0, w1, dx, dw0, dw1t, z, dz, args.tile)[1:]  # [0] is core 1 again
    ops = dict(zip(NAMES, tm.forward_ops(x, w0, w1, z, y, args.tile) + backward))
    weight, out = torch.randn(d, d), torch.empty(t, d)
    dense = lambda: torch.mm(x, weight, out=out)  # noqa: E731
    gemm_flops = plan.flops_per_token() // 2 * t  # each of the six GEMMs does half the forward's FLOPs
    rows = []
    for setting, between in (("hot", lambda: None), ("cold", dense)):
        dense_s = median_seconds(dense, lambda: None, args.repeats)
        dense_rate = 2 * d * d * t / dense_s
        for name, op in ops.items():
            seconds = median_seconds(lambda op=op: native.chain([op], t, args.tile), between, args.repeats)
            rows.append({"setting": setting, "gemm": name, "ms": seconds * 1e3,
                         "gflops": gemm_flops / seconds / 1e9, "x_dense": gemm_flops / seconds / dense_rate})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--tile", type=int, default=32, help="tokens per tile (PathPolicy.native_tile_tokens)")
    parser.add_argument("--repeats", type=int, default=9)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    apply_process_settings(args.omp_wait, args.keep_freed_memory, "bench/gemms.py")
    import torch

    from scaling.structures.fastpath.paths import native_runs

    if not native_runs():
        sys.exit("the native offset GEMM is not built or not usable here (see scaling/structures/fastpath/native.py)")
    torch.set_num_threads(args.threads)
    rows = profile(args)
    if args.json:
        print(json.dumps({k: v for k, v in vars(args).items() if k != "json"} | {"rows": rows}))
        return
    print(f"BTT rank {args.rank}, d = {args.width}, {args.tokens} tokens, tile {args.tile}, {args.threads} threads: "
          "each GEMM's GFLOP/s as a fraction of dense GEMM's")
    print(f"{'GEMM':<6} " + " ".join(f"{s + ' x dense':>13}" for s in ("hot", "cold")))
    for name in NAMES:
        ratios = [r["x_dense"] for r in rows if r["gemm"] == name]
        print(f"{name:<6} " + " ".join(f"{v:>13.2f}" for v in ratios))


if __name__ == "__main__":
    main()
