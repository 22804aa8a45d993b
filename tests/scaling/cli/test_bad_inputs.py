"""A hostile user's inputs, table-driven: each is refused before anything is created or submitted, with one line
that names the field and the fix, and a non-zero exit.

Every case runs through the real entry points (`scaling.launch.main`, `scaling.train.main`) in this process; the
sweep files come from a temporary sweeps/ folder so each launch expands a 4-run sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import scaling.config.compose
from scaling.cli.launch import main as launch_main
from scaling.cli.train import main as train_main
from sweep_fixtures import TINY_BASE, tiny_sweep

# (arguments, what the line must name, what fix it must give, entry points: launch / train / both)
CASES = [
    ("train.log_every=0", "train.log_every=0", "an integer >= 1", "both"),
    ("structure.layout=bogus", "structure.layout=bogus", "one of paper, balanced", "both"),
    ("train.eval_batches=0", "train.eval_batches=0", "an integer >= 1", "both"),
    ("train.beta1=2", "train.beta1=2", "in [0, 1)", "both"),
    ("train.beta2=1", "train.beta2=1", "in [0, 1)", "both"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1", ">= 0", "both"),
    ("train.device=tpu", "train.device=tpu", "auto, cpu, cuda", "both"),
    ("model.parametrization=bogus", "model.parametrization=bogus", "structure_aware, naive, standard", "both"),
    ("logger.mode=bogus", "logger.mode=bogus", "online, offline, disabled", "both"),
    ("model.base_width=0", "model.base_width=0", "an integer >= 1", "both"),
    ("train.min_lr_frac=-0.1", "train.min_lr_frac=-0.1", "in [0, 1]", "both"),
    ("train.warmup_tokens=-5", "train.warmup_tokens=-5", "an integer >= 0", "both"),
    ("train.threads=0", "train.threads=0", "an integer >= 1", "both"),
    ("train.decay_frac=2", "train.decay_frac=2", "in [0, 1]", "both"),
    ("train.grad_clip=nan", "train.grad_clip=nan", "finite number >= 0", "both"),
    ("train.precision=fp16", "train.precision=fp16", "auto, fp32, bf16", "both"),
    ("train.lr=inf", "train.lr=inf", "finite number > 0", "both"),
    ("train.lr=-1", "train.lr=-1", "finite number > 0", "both"),
    ("train.schedule=linear", "train.schedule=linear", "cosine, constant, wsd", "both"),
    ("train.batch_size=0", "train.batch_size=0", "an integer >= 1", "both"),
    ("train.diverge_factor=0.5", "train.diverge_factor=0.5", "> 1", "both"),
    ("train.eval_points=-1", "train.eval_points=-1", "an integer >= 0", "both"),
    ("train.checkpoint_every_s=-1", "train.checkpoint_every_s=-1", ">= 0", "both"),
    ("train.seed=-3", "train.seed=-3", "an integer >= 0", "both"),
    ("data.val_fraction=0", "data.val_fraction=0", "in (0, 1)", "both"),
    ("model.depth=0", "model.depth=0", "an integer >= 1", "both"),
    ("model.ffn_ratio=0", "model.ffn_ratio=0", "> 0", "both"),
    ("structure.aux_weight=-1", "structure.aux_weight=-1", ">= 0", "both"),
    ("structure.rank=4", "structure.rank=4 is not a setting of dense", "dense takes no settings", "both"),
    ("structure=btt structure.cores=3", "structure.cores=3 is not a setting of btt", "btt takes rank, layout", "train"),
    ("+train.lrr=0.1", "train.lrr is not a setting", "did you mean train.lr?", "both"),
    ("train.lrr=0.1", "train.lrr is not a setting", "did you mean train.lr?", "both"),
    ("+model.foo=1", "model.foo is not a setting", "the settings here are model.family", "both"),
    ("+seed=1", "seed is not a setting", "did you mean train.seed?", "train"),
    ("+bogus=1", "bogus is not a setting", "the settings here are model, structure", "train"),
    ("train.seed=1.5", "train.seed=1.5", "takes an integer", "both"),
    ("model.qk_norm=maybe", "model.qk_norm=maybe", "takes true or false", "both"),
    ("logger.tags=abc", "logger.tags=abc", "takes a list", "both"),
    ("model=bogus", "model/bogus", "choose one of: gpt2, mlp, vit", "both"),
    ("train.flops=nan", "train.flops=nan", "a finite number > 0", "train"),
    ("train.tokens=0", "train.tokens=0", "an integer >= 1", "train"),
    ("model.width=abc", "model.width=abc", "takes an integer", "train"),
    # launch-only: sweep axes and budgets, launch options, cluster settings
    ("model.width=64", "model.width is swept by axes", "edit the sweep's values", "launch"),
    ("structure=kron", "structure is swept by the variants", "edit the sweep's values", "launch"),
    ("train.flops=nan", "train.flops is swept by budgets", "edit the sweep's values", "launch"),
    ("train.tokens=100", "train.tokens is swept by budgets", "edit the sweep's values", "launch"),
    ("cluster.kind=aws", "cluster.kind=aws", "local, debug, slurm", "launch"),
    ("cluster.cpus_per_task=0", "cluster.cpus_per_task=0", "an integer >= 1", "launch"),
    ("cluster.parallel_jobs=0", "cluster.parallel_jobs=0", "an integer >= 1", "launch"),
    ("cluster.nodes=0", "cluster.nodes=0", "an integer >= 1", "launch"),
    ("cluster=slurm cluster.timeout_min=1", "cluster.signal_delay_s=120", "lower it", "launch"),
    ("+cluster.foo=1", "cluster.foo is not a setting", "the settings here are cluster.kind", "launch"),
    ("dry_runn=true", "dry_runn is not a setting", "did you mean dry_run?", "launch"),
    ("+sweep=missing", "sweep/missing", "choose one of:", "launch"),
    ("+sweep=broken", "broken.yaml", "fix the file's YAML", "launch"),
    ("+sweep=typo", "unknown key(s) ['axis']", "a sweep has only name, description", "launch"),
    ("+sweep=dup_a", "dup_a.yaml and dup_b.yaml all declare name: dup", "give each file its own name", "launch"),
]


@pytest.fixture
def sweeps_dir(tmp_path, monkeypatch) -> Path:
    """sweeps/ with the 4-run `tiny` sweep, a file that is not YAML, one with a typo'd key, and a duplicate name."""
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_sweep()))
    (folder / "broken.yaml").write_text("name: broken\nbase: [model=gpt2\n")
    (folder / "typo.yaml").write_text(yaml.safe_dump({**tiny_sweep(name="typo"), "axis": {"train.seed": [1]}}))
    for stem in ("dup_a", "dup_b"):
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(tiny_sweep(name="dup")))
    monkeypatch.setattr(scaling.config.compose, "SWEEPS_DIR", folder)
    return folder


def entry_points(cases):
    """A case for both entry points runs its train one in the fast lane and its launch one (a sweep expanded
    each time, about 1 s) in the slow lane; launch-only cases stay fast."""
    for args, field, fix, where in cases:
        for entry in (("launch", "train") if where == "both" else (where,)):
            marks = pytest.mark.slow if where == "both" and entry == "launch" else ()
            yield pytest.param(entry, args, field, fix, id=f"{entry}:{args}", marks=marks)


@pytest.mark.parametrize("entry, args, field, fix", list(entry_points(CASES)))
def test_bad_input_is_refused_in_one_clear_line(entry, args, field, fix, sweeps_dir, tmp_path, capsys):
    root = tmp_path / "results"
    argv = [*args.split(), f"results_root={root}"]
    if entry == "launch":
        code = launch_main(argv if args.startswith("+sweep=") else ["+sweep=tiny", *argv])
    else:
        code = train_main([*TINY_BASE, *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and field in lines[0] and fix in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not root.exists()  # no run directory, no manifest, no submitit folder: nothing created or submitted


def test_one_bad_sweep_file_affects_only_its_own_sweep(sweeps_dir, tmp_path, capsys):
    code = launch_main(["+sweep=tiny", "dry_run=true", "estimate_time=false", f"results_root={tmp_path / 'r'}"])
    assert code == 0
    assert "sweep 'tiny': 4 runs" in capsys.readouterr().out


def test_the_table_covers_every_case_of_the_issue():
    named = {args.split("=")[0].lstrip("+") for args, *_ in CASES}
    issue = {"train.log_every", "train.eval_batches", "train.beta1", "train.weight_decay", "train.device",
             "model.parametrization", "logger.mode", "model.base_width", "train.min_lr_frac", "train.warmup_tokens",
             "train.grad_clip", "train.precision", "train.lr", "train.flops", "train.lrr", "model.width"}
    assert issue <= named
