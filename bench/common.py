"""What every benchmark shares: threads and process settings, the device and precision, and timing on it.

Process settings, identical for every model and applied before torch starts (they act on the whole process;
both defaults are what training uses too, scaling/process.py):
  --omp-wait passive   OMP_WAIT_POLICY: idle OpenMP threads sleep at once instead of spinning. On a shared
                       2-core machine a spinning thread takes the core its partner needs, which stalls every
                       parallel region; models that issue many medium-sized ops (structured layers) suffer most.
  --keep-freed-memory  glibc malloc keeps freed memory for reuse (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)
                       instead of returning it to the OS, so each step's large activations do not page-fault anew
                       (page faults are expensive in this sandbox). Off with --no-keep-freed-memory.

Device and precision (bench/layers.py, bench/train.py) follow training's train.device and train.precision:
--device auto takes CUDA when it is visible, --precision auto is bf16 autocast on CUDA and fp32 on the CPU; both
take several precisions (default fp32 and bf16), timed side by side. On CUDA every structure runs its plain-ops
path (bmm_schedule.reference_apply) and dense layers run cuBLAS; on the CPU the structures' fused paths take fp32
and bf16 autocast alike (scaling/structures/fastpath/paths.py). `copy_bandwidth` measures the memory bandwidth
against which the benchmarks state each layer's memory-traffic limit.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

OMP_WAIT = {"passive": "PASSIVE", "active": "ACTIVE"}

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, by device-name
# fragment, first match wins: the MFU denominator when --peak-tflops is not given.
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.1),
                    ("L4", 121.0)]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--threads, the process settings (--omp-wait, --keep-freed-memory) and --json: shared by every benchmark."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait", choices=sorted(OMP_WAIT), default="passive")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --precision (one or more), as training's train.device and train.precision."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when visible, else the CPU")
    parser.add_argument("--precision", nargs="+", choices=["auto", "fp32", "bf16"], default=["fp32", "bf16"],
                        help="one or more, timed side by side (default fp32 bf16); auto: bf16 autocast on CUDA, "
                             "fp32 on the CPU")


def precisions(device, asked: list[str]) -> list[str]:
    """--precision resolved on this device ("fp32" / "bf16"), each once, in the order asked."""
    return list(dict.fromkeys(precision_name(device, p) for p in asked))


def apply_process_settings(omp_wait: str, keep_memory: bool, script: str) -> None:
    """Set OMP_WAIT_POLICY (before torch is imported) and glibc's reuse of freed memory; exits if too late."""
    if "torch" in sys.modules:
        sys.exit(f"--omp-wait must take effect before torch is imported; run {script} as a script")
    os.environ["OMP_WAIT_POLICY"] = OMP_WAIT[omp_wait]
    from scaling.process import keep_freed_memory

    if keep_memory and not keep_freed_memory():
        sys.exit("--keep-freed-memory: glibc mallopt refused the settings; rerun with --no-keep-freed-memory")


def resolve_device(name: str):
    """The torch.device for --device (exits with the fix when CUDA was asked for and is not there)."""
    from scaling.train.device import pick_device

    try:
        return pick_device(name)
    except RuntimeError:
        sys.exit("--device cuda: no CUDA device is visible here; use --device cpu or auto")


def precision_name(device, precision: str) -> str:
    """What --precision resolves to on this device: "bf16" or "fp32" (training's rule,
    scaling.train.device.uses_bf16)."""
    from scaling.train.device import uses_bf16

    return "bf16" if uses_bf16(device, precision) else "fp32"


def synchronize(device) -> None:
    """Wait for the device's queued work, so that a wall-clock interval covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def shuffled(keys: list, repeat: int) -> list:
    """keys in the order timed in repeat `repeat`: a permutation seeded by the repeat, so no entry always runs right
    after the same one. A layer timed right after dense fp32 GEMM measured 1.1-1.2x slower on the AMX Xeon (what
    runs in the next few ms after MKL's sgemm runs slower there), which a fixed order charged to one structure."""
    return random.Random(repeat).sample(keys, len(keys))


def timed(device, fn: Callable[[], object]) -> float:
    """Wall seconds of fn() including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def copy_bandwidth(device, megabytes: int = 256, repeats: int = 5) -> float:
    """Measured copy bandwidth, bytes/s: one tensor of `megabytes` copied into another (read + write counted),
    median of repeats after one warm-up, on torch's threads. Larger than the CPU's caches, so it is memory's."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    seconds = [timed(device, lambda: dst.copy_(src)) for _ in range(repeats + 1)][1:]
    return 2 * src.numel() * 4 / statistics.median(seconds)


def dense_gemm_flops(device, precision: str, size: int, repeats: int = 5) -> float:
    """Achieved FLOP/s of a size^3 dense matmul on this device and precision (median of repeats after one
    warm-up): the best a dense layer can hope for here, measured in the benchmark's own process."""
    import torch

    from scaling.train.device import autocast_for

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    with autocast_for(device, precision):
        seconds = [timed(device, lambda: a @ b) for _ in range(repeats + 1)][1:]
    return 2 * size**3 / statistics.median(seconds)


def peak_tflops(device, precision: str, given: float | None) -> float | None:
    """The hardware peak for MFU: --peak-tflops when given, else the data-sheet bf16 peak of a known GPU."""
    if given is not None or device.type != "cuda" or precision_name(device, precision) != "bf16":
        return given
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in BF16_PEAK_TFLOPS if fragment in name), None)
