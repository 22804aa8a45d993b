"""A hostile user's inputs, table-driven: each is refused before anything is created or submitted, with one line
that names the field and the fix, and exit status 2.

Every case runs through the real entry points (`scaling.launch`, `scaling.train`, `scaling.status`,
`scaling.describe`) in this process; the sweep files come from a temporary sweeps/ folder so each launch expands a
4-run sweep, and sweep files given by path from its files/ folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import scaling.config.compose
from scaling.cli.describe import main as describe_main
from scaling.cli.launch import main as launch_main
from scaling.cli.status import main as status_main
from scaling.cli.train import main as train_main
from scaling.config.compose import compose_run_config
from scaling.launch.sweeps import compose_launch_config
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
    # issue 23: every field's full range, before anything is created
    ("model.width=1000000000", "model.width=1000000000", "<= 1_048_576", "both"),
    ("model.base_width=4000000", "model.base_width=4000000", "<= 1_048_576", "both"),
    ("model.depth=100000", "model.depth=100000", "<= 1_024", "both"),
    ("model.head_dim=0", "model.head_dim=0", "an integer >= 1", "both"),
    ("model.ffn_ratio=1e9", "model.ffn_ratio=1e+09", "<= 1024", "both"),
    ("model.context=0", "model.context=0", "an integer >= 1", "both"),
    ("model.patch_size=0", "model.patch_size=0", "an integer >= 1", "both"),
    ("model.ffn_experts=-1", "model.ffn_experts=-1", "an integer >= 0", "both"),
    ("model.ffn_top_k=0", "model.ffn_top_k=0", "an integer >= 1", "both"),
    ("model.attn_scale=nan", "model.attn_scale=nan", "a finite number >= 0", "both"),
    ("model.attn_scale=-1", "model.attn_scale=-1", "a finite number >= 0", "both"),
    ("model.input_lr_mult=inf", "model.input_lr_mult=inf", "<= 1e+06", "both"),
    ("model.pool=max", "model.pool=max", "one of cls, mean", "both"),
    ("structure.aux_weight=1e300", "structure.aux_weight=1e+300", "<= 1e+06", "both"),
    ("data.vocab_size=1", "data.vocab_size=1", "an integer >= 2", "both"),
    ("data.vocab_size=100000", "data.vocab_size=100000", "<= 65_536", "both"),
    ("data.val_fraction=1", "data.val_fraction=1", "in (0, 1)", "both"),
    ("data.input_dim=0", "data.input_dim=0", "an integer >= 1", "both"),
    ("data.teacher_width=0", "data.teacher_width=0", "an integer >= 1", "both"),
    ("data.teacher_depth=2000", "data.teacher_depth=2000", "<= 1_024", "both"),
    ("data.teacher_seed=-1", "data.teacher_seed=-1", "an integer >= 0", "both"),
    ("data.eval_examples=0", "data.eval_examples=0", "an integer >= 1", "both"),
    ("data.tokenizer=words", "data.tokenizer=words", "one of byte, char, bpe, gpt2", "both"),
    ("train.tokens=100000000000000000000000", "train.tokens=100000000000000000000000", "<= 1_000_000_000_000_000",
     "train"),
    ("train.flops=1e300", "train.flops=1e+300", "<= 1e+30", "train"),
    ("train.flops=1e29", "train.flops=1e+29 gives", "lower train.flops", "train"),
    ("train.flops=-5", "train.flops=-5", "a finite number > 0", "train"),
    ("train.lr=1e300", "train.lr=1e+300", "<= 1e+06", "both"),
    ("train.lr=0", "train.lr=0", "a finite number > 0", "both"),
    ("train.seed=18446744073709551616", "train.seed=18446744073709551616", "<= 9_223_372_036_854_775_807", "both"),
    ("train.seed=9223372036854775808", "train.seed=9223372036854775808", "<= 9_223_372_036_854_775_807", "both"),
    ("train.eval_flops=[nan]", "train.eval_flops=[nan]", "each a finite number > 0", "both"),
    ("train.eval_flops=[-1]", "train.eval_flops=[-1.0]", "each a finite number > 0", "both"),
    ("train.eval_flops=[0]", "train.eval_flops=[0.0]", "each a finite number > 0", "both"),
    ("train.eval_flops=[inf]", "train.eval_flops=[inf]", "each a finite number > 0", "both"),
    ("train.eval_flops=abc", "train.eval_flops=abc", "takes a list", "train"),
    ("train.eval_points=100000000", "train.eval_points=100000000", "<= 1_000", "both"),
    ("train.eval_batches=100000", "train.eval_batches=100000", "<= 10_000", "both"),
    ("train.batch_size=10000000", "train.batch_size=10000000", "<= 1_048_576", "both"),
    ("train.warmup_tokens=10000000000000000000", "train.warmup_tokens=10000000000000000000",
     "<= 1_000_000_000_000_000", "both"),
    ("train.threads=1000000", "train.threads=1000000", "<= 1_024", "both"),
    ("train.threads=abc", "train.threads=abc", "takes an integer", "train"),
    ("train.weight_decay=1e300", "train.weight_decay=1e+300", "<= 1e+06", "both"),
    ("train.checkpoint_every_s=inf", "train.checkpoint_every_s=inf", "<= 1e+09", "both"),
    ("train.diverge_factor=inf", "train.diverge_factor=inf", "> 1", "both"),
    ("train.log_every=-1", "train.log_every=-1", "an integer >= 1", "both"),
    ("train.beta1=-0.1", "train.beta1=-0.1", "in [0, 1)", "both"),
    ("train.lr=abc", "train.lr=abc", "takes a number", "train"),
    ("logger.project=''", "logger.project=", "a non-empty name", "both"),
    # a device this machine (or the cluster's jobs) does not have
    ("train.device=cuda:63", "train.device=cuda:63: this machine has", "use train.device=auto or cpu", "both"),
    ("cluster=slurm train.device=cuda", "train.device=cuda: the cluster gives the jobs no GPU",
     "set cluster.gpus_per_node=1", "launch"),
    ("cluster.gpus_per_node=64", "cluster.gpus_per_node=64: cluster=local runs the jobs on this machine",
     "set cluster.gpus_per_node=", "launch"),
    ("cluster=debug cluster.gpus_per_node=64", "cluster=debug runs the jobs on this machine",
     "or launch with cluster=slurm", "launch"),
    # a cache folder that is a file
    ("data.cache_dir={dir}/tiny.yaml", "tiny.yaml is a file, not a folder", "give a folder path", "both"),
    ("data.cache_dir={dir}/tiny.yaml/sub", "tiny.yaml is a file, not a folder", "give a folder path", "both"),
    # true/false settings take true or false, never 1, 2, yes, on
    ("model.qk_norm=1", "model.qk_norm=1", "write model.qk_norm=true or model.qk_norm=false", "both"),
    ("model.qk_norm=yes", "model.qk_norm=yes", "takes true or false", "both"),
    ("model.tie_head=2", "model.tie_head=2", "takes true or false", "both"),
    ("model.bias=on", "model.bias=on", "takes true or false", "both"),
    ("data.augment=no", "data.augment=no", "takes true or false", "both"),
    ("data.flatten=0", "data.flatten=0", "takes true or false", "both"),
    ("dry_run=yes", "dry_run=yes", "write dry_run=true or dry_run=false", "launch"),
    ("dry_run=2", "dry_run=2", "takes true or false", "launch"),
    ("retry_failed=1", "retry_failed=1", "takes true or false", "launch"),
    ("estimate_time=maybe", "estimate_time=maybe", "takes true or false", "launch"),
    ("cluster.wait=yes", "cluster.wait=yes", "takes true or false", "launch"),
    # what Hydra's lexer refuses, with the reason
    ("--foo", "--foo: not a key=value override", "settings are key=value", "both"),
    ("-x", "-x: not a key=value override", "settings are key=value", "train"),
    ("train.seed=١", "ARABIC-INDIC DIGIT ONE", "type ASCII digits", "both"),
    ("train.seed=１", "FULLWIDTH DIGIT ONE", "type ASCII digits", "both"),
    ("train.lr=−1", "MINUS SIGN", "type the ASCII '-'", "both"),
    ("train.lr=–1", "EN DASH", "type the ASCII '-'", "both"),
    ("hydra.run.dir=x", "hydra.run is not used", "use cluster=slurm", "train"),
    # launch options and cluster settings
    ("cluster.gpus_per_node=65", "cluster.gpus_per_node=65", "<= 64", "launch"),
    ("cluster.timeout_min=0", "cluster.timeout_min=0", "an integer >= 1", "launch"),
    ("cluster.tasks_per_node=0", "cluster.tasks_per_node=0", "an integer >= 1", "launch"),
    ("cluster.max_num_timeout=-1", "cluster.max_num_timeout=-1", "an integer >= 0", "launch"),
    ("cluster.mem_gb=0", "cluster.mem_gb=0", "a finite number > 0", "launch"),
    ("cluster.runs_per_job=0", "cluster.runs_per_job=0", "an integer >= 1", "launch"),
    ("cluster.signal_delay_s=-1", "cluster.signal_delay_s=-1", "an integer >= 0", "launch"),
    ("cluster.nodes=100000", "cluster.nodes=100000", "<= 10_000", "launch"),
    ("cluster.kind=Slurm", "cluster.kind=Slurm", "local, debug, slurm", "launch"),
    ("max_runs=0", "max_runs=0", "an integer >= 1", "launch"),
    ("max_runs=2", "sweep 'tiny' expands to 4 runs, more than max_runs=2", "raise the cap with max_runs=4",
     "launch"),
    ("overrides=[train.seed=-1]", "train.seed=-1", "an integer >= 0", "launch"),  # conf/launch.yaml's form
    ("sweep_dir={dir}/nowhere", "sweep folder", "give a folder of sweep YAML files", "launch"),
    # sweep files by path: each fault is one line
    ("+sweep={dir}/files/yamlerr.yaml", "yamlerr.yaml: cannot be read at line 3", "fix the file's YAML", "launch"),
    ("+sweep={dir}/files/tab.yaml", "found character '\\t'", "YAML indents with spaces, not tabs", "launch"),
    ("+sweep={dir}/files/binary.yaml", "binary.yaml: not a text file", "give a sweep YAML file", "launch"),
    ("+sweep={dir}/files/dupkey.yaml", "found duplicate key name", "fix the file's YAML", "launch"),
    ("+sweep={dir}/files/strbase.yaml", "base must be a list of override strings", "a YAML list, not one string",
     "launch"),
    ("+sweep={dir}/files/strtok.yaml", "budgets.tokens must be a non-empty list of positive numbers", "got 4096",
     "launch"),
    ("+sweep={dir}/files/negtok.yaml", "budgets.tokens must be a non-empty list of positive numbers", "got [-1]",
     "launch"),
    ("+sweep={dir}/files/nanflops.yaml", "budgets.flops must be a non-empty list of positive numbers", "got [nan]",
     "launch"),
    ("+sweep={dir}/files/strover.yaml", "variant 'a' overrides must be a list", "a YAML list, not one string",
     "launch"),
    ("+sweep={dir}/files/straxis.yaml", "axes.train.seed must be a non-empty list", "such as [64, 128]", "launch"),
    ("+sweep={dir}/files/strvariants.yaml", "variants must be a mapping", "got 'dense'", "launch"),
    ("+sweep={dir}/files/listvariant.yaml", "variant 'a' must be a mapping", "{overrides: [...]", "launch"),
    ("+sweep={dir}/files/list.yaml", "the file holds no mapping", "see sweeps/quickstart.yaml", "launch"),
    ("+sweep={dir}/files/nofile.yaml", "no such sweep file", "give a path to a sweep YAML file", "launch"),
    ("+sweep={dir}/files/huge.yaml", "expands to 400000 runs, more than max_runs=2000",
     "raise the cap with max_runs=400000", "launch"),
    ("+sweep=tabbed", "found character '\\t'", "YAML indents with spaces, not tabs", "launch"),  # by name
    ("+sweep=binary", "not a text file", "give a sweep YAML file", "launch"),
    ("+sweep=huge", "expands to 400000 runs", "raise the cap with max_runs=400000", "launch"),
    # status and describe take the same settings, with the same checks
    ("+sweep={dir}/files/tab.yaml", "YAML indents with spaces, not tabs", "fix the file's YAML", "status"),
    ("wait=maybe", "wait=maybe", "write wait=true or wait=false", "status"),
    ("wait=1", "wait=1", "takes true or false", "status"),
    ("max_runs=2", "expands to 4 runs", "raise the cap with max_runs=4", "status"),
    ("cluster.kind=aws", "cluster.kind=aws", "local, debug, slurm", "status"),
    ("model.width=0", "model.width=0", "an integer >= 1", "describe"),
    ("model.depth=100000", "model.depth=100000", "<= 1_024", "describe"),
    ("data.cache_dir={dir}/tiny.yaml", "is a file, not a folder", "give a folder path", "describe"),
    ("--foo", "unrecognized arguments: --foo", "usage: python -m scaling.describe", "describe"),
    ("structure.rank=4", "structure.rank=4 is not a setting of dense", "dense takes no settings", "describe"),
    ("+train.lrr=1", "train.lrr is not a setting", "did you mean train.lr?", "describe"),
    ("model.qk_norm=yes", "model.qk_norm=yes", "takes true or false", "describe"),
    ("train.lr=−1", "MINUS SIGN", "type the ASCII '-'", "describe"),
    ("model=bogus", "model/bogus", "choose one of: gpt2, mlp, vit", "describe"),
    ("structure=btt model.width=33", "model.width=33 is not a multiple of model.head_dim=16", "choose a head_dim",
     "describe"),
    ("structure=low_rank structure.rank=0", "structure.rank=0", "an integer >= 1", "train"),
]


HUGE = {"train.seed": list(range(10)), "train.lr": [0.001 * (i + 1) for i in range(10)],
        "model.depth": list(range(1, 11)), "train.beta1": [0.05 * i for i in range(10)],
        "train.beta2": [0.9 + 0.005 * i for i in range(10)]}  # 10^5 points x 2 budgets: refused before composing
# Sweep files a user (or an attacker) may give by path: each fault must be one line.
BAD_FILES = {
    "yamlerr.yaml": "name: yamlerr\nbase: [model=gpt2\n",
    "tab.yaml": "name: tab\nbase:\n\t- model=gpt2\n",
    "dupkey.yaml": "name: a\nname: b\nbudgets: {tokens: [4096]}\n",
    "strbase.yaml": "name: strbase\nbase: 'model=gpt2'\nbudgets: {tokens: [4096]}\n",
    "strtok.yaml": "name: strtok\nbase: [model=gpt2]\nbudgets: {tokens: 4096}\n",
    "negtok.yaml": "name: negtok\nbase: [model=gpt2]\nbudgets: {tokens: [-1]}\n",
    "nanflops.yaml": "name: nanflops\nbase: [model=gpt2]\nbudgets: {flops: [.nan]}\n",
    "strover.yaml": "name: strover\nvariants: {a: {overrides: structure=btt}}\nbudgets: {tokens: [4096]}\n",
    "straxis.yaml": "name: straxis\naxes: {train.seed: 1}\nbudgets: {tokens: [4096]}\n",
    "strvariants.yaml": "name: strvariants\nvariants: dense\nbudgets: {tokens: [4096]}\n",
    "listvariant.yaml": "name: listvariant\nvariants: {a: [structure=btt]}\nbudgets: {tokens: [4096]}\n",
    "list.yaml": "- a\n- b\n",
}


@pytest.fixture
def sweeps_dir(tmp_path, monkeypatch) -> Path:
    """sweeps/ with the 4-run `tiny` sweep, a file that is not YAML, one with a typo'd key, a duplicate name, a
    tab, a binary file and a grid above max_runs; files/ holds the BAD_FILES, given by path."""
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_sweep()))
    (folder / "broken.yaml").write_text("name: broken\nbase: [model=gpt2\n")
    (folder / "typo.yaml").write_text(yaml.safe_dump({**tiny_sweep(name="typo"), "axis": {"train.seed": [1]}}))
    for stem in ("dup_a", "dup_b"):
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(tiny_sweep(name="dup")))
    (folder / "tabbed.yaml").write_text(BAD_FILES["tab.yaml"])
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    huge = yaml.safe_dump({**tiny_sweep(name="huge", axes=HUGE), "budgets": {"tokens": [4096, 8192]}})
    (folder / "huge.yaml").write_text(huge)
    files = folder / "files"
    files.mkdir()
    for name, text in BAD_FILES.items():
        (files / name).write_text(text)
    (files / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (files / "huge.yaml").write_text(huge)
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
    argv = [*args.replace("{dir}", str(sweeps_dir)).split(), f"results_root={root}"]
    sweep = [] if args.startswith("+sweep=") else ["+sweep=tiny"]
    if entry in ("launch", "status"):
        code = {"launch": launch_main, "status": status_main}[entry]([*sweep, *argv])
    else:
        code = {"train": train_main, "describe": describe_main}[entry]([*TINY_BASE, *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
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


def test_the_later_of_rank_and_rank_frac_wins_over_the_preset():
    ranked = compose_run_config(["structure=low_rank", "structure.rank=4"])  # the preset sets rank_frac: 0.125
    assert (ranked.structure.rank, ranked.structure.rank_frac) == (4, None)
    back = compose_run_config(["structure=low_rank", "structure.rank=4", "structure.rank_frac=0.5"])
    assert (back.structure.rank, back.structure.rank_frac) == (None, 0.5)


def test_the_overrides_list_form_of_launch_yaml_header_reaches_every_run(sweeps_dir, tmp_path):
    cfg = compose_launch_config(["+sweep=tiny", "overrides=[train.seed=1,'logger.tags=[a,b]']", "train.lr=0.02"])
    assert list(cfg.overrides) == ["train.seed=1", "logger.tags=[a,b]", "train.lr=0.02"]
