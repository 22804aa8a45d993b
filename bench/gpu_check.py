"""The one command a GPU machine runs first (at most 5 minutes): everything the harness needs to know about it.

    python bench/gpu_check.py [--device cuda|cpu] [--quick] [--out DIR] [--steps 1,2,...] [--budget-s 300]

Steps, each timed and guarded (a step that raises is recorded with its error and the next one runs):
  1 environment  GPU name, driver, CUDA, torch, triton, Python, and every dependency's version against its pin
  2 contract     every registered structure (its conf/structure preset) on the device under bf16 autocast, forward
                 and backward, on each path the device runs, against the fp32 plain-ops reference: normwise relative
                 error of the output, the input gradient and every parameter gradient, within TOLERANCES, and a
                 fused path's within 2x (+0.01) of plain autocast's (tests/scaling/structures/test_contract.py)
  3 benchmarks   bench/layers.py at d = 1024 and 4096 (16,384 tokens, bf16): dense vs every structure on each path
                 the device runs (paths.Path: every member some PathPolicy selects here), BTT also compiled; and
                 bench/train.py's GPT-2 (d = 1024, 12 layers, context 1024, batch 16) with MFU against the GPU's
                 data-sheet bf16 peak (bench/common.py BF16_PEAK_TFLOPS; None when unknown)
  4 resume       a 4-run mini sweep (tiny GPT-2s, dense and BTT x two seeds) launched with cluster=local, its jobs'
                 process group SIGKILLed once mid-run, launched again (it resumes from the checkpoints); every
                 run's metrics.jsonl losses against an uninterrupted launch of the same sweep: bit for bit on the CPU,
                 within RESUME_RTOL on CUDA (atomics in cuBLAS/embedding backward reorder float sums)
  5 compile      torch.compile of GPT-2 with BTT (and dense): step time compiled vs eager (--quick: the aot_eager
                 backend, which traces as inductor does without generating code)
--quick: tiny shapes, every step (what CI runs on the CPU: `--device cpu --quick`). --budget-s: once this many
seconds have passed (default 300; 1200 with --quick, a rehearsal on a slow CPU), the steps left are skipped with a
note.

Writes <out>/<n>-<step>.json (status ok | failed (a check out of tolerance) | error | skipped, seconds, result or
error), summary.json and summary.md; <out> defaults to bench/results/<device>-<YYYY-MM-DD>/. Exit status 0 when
every step is ok, 1 otherwise, 2 for bad flags (one `error:` line).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn

from common import apply_process_settings, copy_bandwidth

RESULTS = Path(__file__).resolve().parent / "results"
# Normwise relative error under bf16 autocast against fp32, any path (bf16 keeps 8 significant bits: unit roundoff
# 2^-8 = 0.0039, and an output goes through two or three such roundings: at most 0.011 seen on the CPU). A scalar
# gain's gradient is one sum with cancellation, and a routed layer's input gradient follows routing that bf16 can
# flip: up to 0.12 seen on the CPU, for plain autocast as for the fused paths.
TOLERANCES = {"output": 0.03, "grad": 0.25}
RESUME_RTOL = 1e-2  # CUDA: resumed vs uninterrupted losses, relative
SWEEP_NAME = "gpu_check_resume"


@dataclasses.dataclass
class Check:
    """What every step gets: the device, the sizes (quick or full) and a scratch folder under the output."""

    device: object  # torch.device
    quick: bool
    tmp: Path


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one `error:` line, not argparse's usage + error
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python bench/gpu_check.py", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when visible")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, every step")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/<device>-<date>/")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step numbers")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the steps left after this many seconds (default 300; --quick: 1200, for a CPU)")
    args = parser.parse_args(argv)
    try:
        args.steps = sorted({int(s) for s in args.steps.split(",")})
    except ValueError:
        parser.error(f"--steps {args.steps!r} is not a comma-separated list of numbers; give e.g. --steps 1,3")
    if not set(args.steps) <= set(STEPS):
        parser.error(f"--steps {','.join(map(str, args.steps))}: choose from {','.join(map(str, STEPS))}")
    if args.budget_s is None:
        args.budget_s = 1200.0 if args.quick else 300.0
    elif not args.budget_s > 0:
        parser.error(f"--budget-s {args.budget_s:g} must be > 0 seconds, e.g. --budget-s 300")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder")
    return args


def device_slug(device) -> str:
    """`cpu`, or the GPU's name in lower case with dashes (nvidia-h100-80gb-hbm3)."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# 1. environment


def environment(check: Check) -> dict:
    """Versions of the GPU stack and of every dependency of the project (None where absent), each against its pin."""
    import torch
    from packaging.requirements import Requirement

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    gpu = None
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        gpu = {"name": props.name, "memory_gib": props.total_memory / 2**30,
               "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count}
    driver = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip() or None
    try:
        requirements = importlib.metadata.requires("structured-scaling") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    deps = {}
    for text in requirements:
        req = Requirement(text)
        if req.marker is None:  # extras (dev, owt) are not needed to run
            have = version(req.name)
            deps[req.name] = {"pin": str(req.specifier), "installed": have,
                              "ok": have is not None and req.specifier.contains(have, prereleases=True)}
    missing = sorted(name for name, d in deps.items() if not d["ok"])
    result = {"device": str(check.device), "gpu": gpu, "driver": driver, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "torch": torch.__version__, "triton": version("triton"), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "dependencies": deps, "unmet_pins": missing}
    name = gpu["name"] if gpu else "CPU"
    result["headline"] = (f"{name}, driver {driver}, CUDA {torch.version.cuda}, torch {torch.__version__}, triton "
                          f"{result['triton']}; pins unmet: {', '.join(missing) or 'none'}")
    return result


# 2. contract


def device_paths(device, precision: str, width: int) -> dict:
    """{Path value: a PathPolicy that selects it} for every paths.Path member that this device runs under
    `precision`: select_path asked, for a rank-1 BTT plan at `width`, under every on/off combination of
    PathPolicy's switches with the size floors off (so each policy runs its path at any size). A member that no
    combination selects here (another device's, or one not built) is left out."""
    import torch

    from scaling.structures.btt import btt_plan
    from scaling.structures.fastpath.paths import DEFAULT_POLICY, PathPolicy, select_path
    from scaling.train.device import autocast_for

    side = int(width**0.5)
    plan = btt_plan(side, width // side, side, width // side, 1)
    x = torch.zeros(4, width, device=device)
    switches = [f.name for f in dataclasses.fields(PathPolicy) if f.type in ("bool", bool)]
    base = dataclasses.replace(DEFAULT_POLICY, **{f.name: 0 for f in dataclasses.fields(PathPolicy)
                                                  if f.name.endswith("_min_elements")})
    found = {}
    for values in itertools.product(*[(getattr(base, s), not getattr(base, s)) for s in switches]):
        policy = dataclasses.replace(base, **dict(zip(switches, values)))
        with autocast_for(device, precision):
            found.setdefault(select_path(plan, x, policy).value, policy)
    return found


def relative_errors(got: tuple, want: tuple) -> dict[str, float]:
    """Normwise relative error of each of (output, input gradient, parameter gradients) against want's."""
    names = ["output", "x.grad", *(f"{n}.grad" for n in want[2])]
    pairs = [(got[0], want[0]), (got[1], want[1]), *((got[2][n], want[2][n]) for n in want[2])]
    return {name: float((g.float() - w).norm() / max(float(w.norm()), 1e-30)) for name, (g, w) in zip(names, pairs)}


def contract(check: Check) -> dict:
    """Every registered structure, square, wider and narrower, under bf16 autocast on each path the device runs,
    against fp32 plain ops on the same device: each error within TOLERANCES, and a fused path's within 2x (+0.01)
    of plain autocast's own (the bound of tests/scaling/structures/test_contract.py)."""
    import torch
    from layers import structure_config

    from scaling.structures import REGISTRY, build_linear
    from scaling.structures.fastpath.paths import PathPolicy, use_policy
    from scaling.train.device import autocast_for

    d = 64 if check.quick else 256
    shapes = [(d, d), (d, d * 3 // 2), (d * 3 // 2, d)]
    tokens = 18 if check.quick else 512
    paths = device_paths(check.device, "bf16", d)
    plain = PathPolicy(fused=False, native=False)
    cases, worst = [], {"output": 0.0, "grad": 0.0}
    for name, (d_in, d_out) in itertools.product(REGISTRY, shapes):
        torch.manual_seed(0)
        layer = build_linear(structure_config(name), d_in, d_out, bias=False).to(check.device)
        factors = {spec.name for spec in layer.factor_specs()}
        with torch.no_grad():  # routers and scalars off their init (a zero router routes every token alike)
            for n, p in layer.named_parameters():
                if n not in factors:
                    p.normal_()
        x = torch.randn(tokens, d_in, device=check.device)
        g = torch.randn(tokens, d_out, device=check.device)

        def run(policy, precision):
            layer.zero_grad()
            xi = x.clone().requires_grad_(True)
            with use_policy(policy), autocast_for(check.device, precision):
                out = layer(xi)
            (out.float() * g).sum().backward()
            return out.detach(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

        want = run(plain, "fp32")
        autocast = relative_errors(run(plain, "bf16"), want)
        for path, policy in paths.items():
            errors = relative_errors(run(policy, "bf16"), want)
            kinds = {e: "output" if e == "output" else "grad" for e in errors}
            ok = all(err <= TOLERANCES[kinds[e]] and err <= 2 * autocast[e] + 0.01 for e, err in errors.items())
            for e, err in errors.items():
                worst[kinds[e]] = max(worst[kinds[e]], err)
            cases.append({"structure": name, "d_in": d_in, "d_out": d_out, "path": path, "errors": errors,
                          "plain_autocast": autocast, "ok": ok})
    failed = [f"{c['structure']} {c['d_in']}x{c['d_out']} [{c['path']}]" for c in cases if not c["ok"]]
    return {"tolerances": TOLERANCES, "tokens": tokens, "paths": sorted(paths), "cases": cases, "worst": worst,
            "failed": failed, "passed": not failed,
            "headline": f"{len(cases) - len(failed)}/{len(cases)} within tolerance (paths {', '.join(paths)}); worst "
                        f"output {worst['output']:.4f} (tol {TOLERANCES['output']}), gradient {worst['grad']:.4f} "
                        f"(tol {TOLERANCES['grad']})" + (f"; out of tolerance: {', '.join(failed)}" if failed else "")}


# 3. benchmarks


def compile_backend(check: Check) -> str:
    """inductor; aot_eager (dynamo and AOT autograd, no code generation) for --quick, where inductor's C++ builds
    would take minutes of a 2-core CPU (inductor on the CPU: tests/scaling/structures/test_compile.py)."""
    return "aot_eager" if check.quick else "inductor"


def benchmarks(check: Check) -> dict:
    """bench/layers.py's rows (bf16 fwd+bwd, each path, BTT also compiled) and bench/train.py's GPT-2 with MFU."""
    import torch

    import layers
    import train as bench_train

    widths, tokens = ([64], 128) if check.quick else ([1024, 4096], 16384)
    args = argparse.Namespace(tokens=tokens, precision=["bf16"], warmup=1 if check.quick else 2,
                              repeats=2 if check.quick else 5)
    configs = {spec: layers.structure_config(spec) for spec in layers.default_specs()}
    paths = device_paths(check.device, "bf16", widths[0])
    bandwidth = copy_bandwidth(check.device, 16 if check.quick else layers.COPY_MB)
    rows = [dataclasses.asdict(row) for width in widths
            for row in layers.bench_width(width, configs, args, check.device, bandwidth, paths, compiled=("btt",),
                                          backend=compile_backend(check))]
    if check.quick:
        gpt = ["--width", "64", "--depth", "1", "--context", "16", "--batch", "2", "--warmup", "1", "--repeats", "2",
               "--gemm-size", "128"]
    else:
        gpt = ["--width", "1024", "--depth", "12", "--context", "1024", "--batch", "16", "--warmup", "2"]
    gpt_args = bench_train.parse_args([*gpt, "--structures", "btt", "--precision", "bf16",
                                       "--device", check.device.type, "--threads", str(torch.get_num_threads())])
    gpt_rows, setting = bench_train.run(gpt_args)
    btt = [r for r in rows if r["structure"].partition(" ")[0] == "btt" and r["width"] == widths[-1]]
    dense_gpt = next(r for r in gpt_rows if r.structure == "dense")
    mfu = "unknown peak" if dense_gpt.mfu is None else f"{dense_gpt.mfu:.1%} MFU"
    headline = "; ".join(f"BTT r1 d={r['width']} [{r['path']}] {r['speedup_vs_dense']:.2f}x dense, "
                         f"{r['limit_ms'] / r['ms']:.0%} of copy bandwidth" for r in btt if not r["error"])
    return {"layers": {"tokens": tokens, "widths": widths, "precision": "bf16", "paths": sorted(paths),
                       "copy_gbs": bandwidth / 1e9, "rows": rows},
            "gpt2": {"settings": {k: v for k, v in vars(gpt_args).items() if k != "json"}, **setting,
                     "rows": [dataclasses.asdict(r) for r in gpt_rows]},
            "headline": f"{headline}; GPT-2 d={gpt_args.width} dense {dense_gpt.tokens_per_s:,.0f} tokens/s, {mfu}"}


# 4. resume


def resume(check: Check) -> dict:
    """The mini sweep killed once mid-run and resumed, against an uninterrupted launch of it."""
    from scaling.store.results import read_json, read_jsonl, read_summary, run_dir

    root = check.tmp / "resume"
    root.mkdir(parents=True)
    tokens = 12_800 if check.quick else 819_200  # 50 / 800 steps of 256 / 1024 tokens
    width, context = (32, 32) if check.quick else (256, 128)
    base = ["model=gpt2", f"model.width={width}", f"model.base_width={width}", "model.depth=2", "model.head_dim=16",
            f"model.context={context}", "train.batch_size=8", "train.lr=0.01", "train.eval_points=8",
            "train.log_every=1", f"train.checkpoint_every_s={0 if check.quick else 0.5}", "logger=disabled",
            f"train.device={check.device.type}"]
    sweep = {"name": SWEEP_NAME, "description": "bench/gpu_check.py: killed once and resumed", "base": base,
             "variants": {"dense": {"overrides": ["structure=dense"], "axes": {"train.seed": [0, 1]}},
                          "btt": {"overrides": ["structure=btt", "structure.rank=1"], "axes": {"train.seed": [0, 1]}}},
             "budgets": {"tokens": [tokens]}}
    (root / "sweep.yaml").write_text(json.dumps(sweep))  # JSON is YAML
    gpus = ["cluster.gpus_per_node=1"] if check.device.type == "cuda" else []  # local jobs see no GPU without it
    launches: list[subprocess.Popen] = []

    def launch(results: Path) -> subprocess.Popen:
        """The sweep launched into `results`, in a process group of its own (its jobs inherit it)."""
        command = [sys.executable, "-m", "scaling.launch", f"+sweep={root / 'sweep.yaml'}", f"results_root={results}",
                   "cluster=local", *gpus]
        with (root / f"{results.name}.log").open("w") as log:
            launches.append(subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True))
        return launches[-1]

    killed, straight = root / "killed", root / "straight"
    try:
        victim, at_kill = kill_and_resume(launch, killed, straight, check.quick)
    finally:  # a launch that an error left running stops with the step
        for proc in launches:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def curve(results: Path, rid: str) -> list[dict]:
        keep = ("kind", "step", "tokens", "loss", "val_loss")
        return [{k: r[k] for k in keep if k in r} for r in read_jsonl(run_dir(results, rid) / "metrics.jsonl")]

    runs = []
    for rid in [r["run_id"] for r in read_json(straight / "sweeps" / f"{SWEEP_NAME}.json")["runs"]]:
        got, want = curve(killed, rid), curve(straight, rid)
        pairs = [(g[k], w[k]) for g, w in zip(got, want) for k in ("loss", "val_loss") if k in w]
        rel = max((abs(g - w) / max(abs(w), 1e-30) for g, w in pairs), default=0.0)
        same_rows = [(g["kind"], g["step"]) for g in got] == [(w["kind"], w["step"]) for w in want]
        summary = read_summary(run_dir(killed, rid))
        runs.append({"run_id": rid, "status": summary["status"], "restarts": summary["restarts"],
                     "rows": len(want), "same_rows": same_rows, "identical": same_rows and got == want,
                     "max_rel_diff": rel})
    exact = check.device.type == "cpu"
    ok = all(r["status"] == "completed" and r["same_rows"] and (r["identical"] if exact else r["max_rel_diff"] <=
             RESUME_RTOL) for r in runs) and any(r["restarts"] > 0 for r in runs)
    want = "bit for bit" if exact else f"within rel {RESUME_RTOL}"
    return {"sweep": sweep, "killed_run": victim.name, "killed_at_step": at_kill, "tolerance": want,
            "signal": "SIGKILL to the jobs' process group", "runs": runs, "passed": ok,
            "headline": f"run {victim.name} SIGKILLed at step {at_kill} and resumed; "
                        f"{sum(r['identical'] for r in runs)}/{len(runs)} curves bit-identical to the uninterrupted "
                        f"launch, max rel diff {max(r['max_rel_diff'] for r in runs):.2g} (wanted {want})"}


def kill_and_resume(launch, killed: Path, straight: Path, quick: bool) -> tuple[Path, int]:
    """Launch the sweep into `killed` and `straight` at once; SIGKILL the first launch's process group (its jobs')
    once one of its runs has a checkpoint a few steps in, launch it again and wait for both. Returns the killed
    run's folder and the last train step it had logged."""
    from scaling.launch.cancel import launched_jobs
    from scaling.store.results import read_jsonl, read_summary

    def log_tail(results: Path) -> str:
        return " | ".join((results.parent / f"{results.name}.log").read_text(errors="replace").splitlines()[-5:])

    def train_steps(rdir: Path) -> list[int]:
        rows = read_jsonl(rdir / "metrics.jsonl") if (rdir / "metrics.jsonl").exists() else []
        return [r["step"] for r in rows if r["kind"] == "train"]

    first, reference = launch(killed), launch(straight)
    deadline = time.monotonic() + (240 if quick else 150)
    victim = None
    while victim is None:  # a run with a checkpoint, a few steps in and not finished
        if time.monotonic() > deadline or first.poll() is not None:
            raise RuntimeError(f"no run of the first launch got a few steps in before it ended or timed out: "
                               f"{log_tail(killed)}")
        for rdir in sorted((killed / "runs").glob("*")):
            summary = read_summary(rdir) if (rdir / "summary.json").exists() else None
            if summary and summary["status"] == "running" and (rdir / "checkpoint.pt").exists() \
                    and len(train_steps(rdir)) >= 5:
                victim = rdir
                break
        time.sleep(0.05)
    [jobs] = launched_jobs(killed, SWEEP_NAME)
    for group in {os.getpgid(int(pid)) for pid in jobs.live()} | {first.pid}:  # the launcher leads its own group
        os.killpg(group, signal.SIGKILL)
    first.wait(timeout=60)
    at_kill = max(train_steps(victim))
    again = launch(killed)
    for proc, results in ((again, killed), (reference, straight)):
        if proc.wait(timeout=300 if quick else 200) != 0:
            raise RuntimeError(f"the launch into {results.name} exited {proc.returncode}: {log_tail(results)}")
    return victim, at_kill


# 5. compile


def compile_gpt2(check: Check) -> dict:
    """bench/train.py's GPT-2 with BTT and dense, eager and then under torch.compile: step time and the ratio."""
    import torch

    import train as bench_train

    if check.quick:
        gpt = ["--width", "64", "--depth", "1", "--context", "16", "--batch", "2", "--repeats", "2",
               "--gemm-size", "128"]
    else:
        gpt = ["--width", "1024", "--depth", "4", "--context", "1024", "--batch", "8", "--repeats", "5"]
    common = [*gpt, "--warmup", "2", "--structures", "btt", "--precision", "bf16", "--device", check.device.type,
              "--threads", str(torch.get_num_threads())]
    out = {}
    for mode, extra in (("eager", []), ("compiled", ["--compile", compile_backend(check)])):
        started = time.perf_counter()
        rows, _ = bench_train.run(bench_train.parse_args([*common, *extra]))
        out[mode] = {"wall_s": time.perf_counter() - started, "rows": [dataclasses.asdict(r) for r in rows]}
    ratios = {r["structure"]: e["step_ms"] / r["step_ms"]
              for e, r in zip(out["eager"]["rows"], out["compiled"]["rows"])}
    return {**out, "settings": common, "backend": compile_backend(check), "speedup_compiled": ratios,
            "headline": ", ".join(f"{s} compiled {x:.2f}x eager" for s, x in ratios.items())
            + f" (compiling took {out['compiled']['wall_s'] - out['eager']['wall_s']:.0f} s more)"}


STEPS = {1: ("environment", environment), 2: ("contract", contract), 3: ("benchmarks", benchmarks),
         4: ("resume", resume), 5: ("compile", compile_gpt2)}


def run_step(number: int, check: Check) -> dict:
    """One step's record: its result, or the error it raised (with the traceback), and its seconds."""
    name, fn = STEPS[number]
    started = time.monotonic()
    try:
        result = fn(check)
        status = "failed" if result.get("passed") is False else "ok"
        record = {"status": status, "headline": result.pop("headline", ""), "result": result}
    except Exception as err:
        record = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    except SystemExit as err:  # a bench helper refusing its input exits with the reason
        record = {"status": "error", "error": f"exit: {err.code}"}
    return {"step": number, "name": name, **record, "seconds": time.monotonic() - started}


def summary_markdown(meta: dict, records: list[dict]) -> str:
    lines = [f"# GPU check: {meta['device_name']}, {meta['date']}", "",
             f"`{meta['command']}`, {meta['seconds']:.0f} s in all (budget {meta['budget_s']:g} s).", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    for r in records:
        text = r.get("headline") or r.get("error") or r.get("note", "")
        lines.append(f"| {r['step']} {r['name']} | {r['status']} | {r['seconds']:.1f} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is visible here; use --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    date = datetime.date.today().isoformat()
    out = args.out or RESULTS / f"{device_slug(device)}-{date}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    records = []
    with tempfile.TemporaryDirectory(prefix="tmp-", dir=out) as tmp:
        check = Check(device, args.quick, Path(tmp))
        for number in args.steps:
            elapsed = time.monotonic() - started
            if elapsed > args.budget_s:
                record = {"step": number, "name": STEPS[number][0], "status": "skipped", "seconds": 0.0,
                          "note": f"skipped: the time budget ({args.budget_s:g} s) was spent after {elapsed:.0f} s"}
            else:
                record = run_step(number, check)
            print(f"step {number} {record['name']}: {record['status']} ({record['seconds']:.1f} s) "
                  f"{record.get('headline') or record.get('error') or record.get('note', '')}", flush=True)
            (out / f"{number}-{record['name']}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
            records.append(record)
    meta = {"device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU", "date": date, "quick": args.quick, "budget_s": args.budget_s,
            "command": " ".join(["python bench/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
            "seconds": time.monotonic() - started}
    steps = [{k: r[k] for k in ("step", "name", "status", "seconds")} for r in records]
    (out / "summary.json").write_text(json.dumps({**meta, "steps": steps}, indent=1) + "\n")
    (out / "summary.md").write_text(summary_markdown(meta, records))
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    apply_process_settings("passive", True, "bench/gpu_check.py")  # as bench/layers.py and train.py: before torch
    sys.exit(main())
