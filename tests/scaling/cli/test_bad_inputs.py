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
from hydra.core.config_store import ConfigStore

import scaling.config.compose
from scaling.cli.describe import main as describe_main
from scaling.cli.launch import main as launch_main
from scaling.cli.status import main as status_main
from scaling.cli.train import main as train_main
from scaling.config.compose import compose_run_config
from scaling.launch.sweeps import compose_launch_config
from sweep_fixtures import TINY_BASE, tiny_sweep
from clear_errors import assert_one_clear_line

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
    # (launch: tiny sweeps model.width, so its axis refuses a width override first: the model.width=64 row)
    ("model.width=1000000000", "model.width=1000000000", "<= 1_048_576", "train"),
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
    # issue 23, a second fresh table (a probe of new inputs): wrong types, empty strings, nulls, NaN, case, unicode,
    # interpolations, odd command-line shapes, launch options, status and describe
    ('train.lr=0x10', 'train.lr=0x10', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.lr=1e-400', 'train.lr=0.0 is out of range', '+06 (the default is train.lr=0.003)', 'train'),
    ("train.lr=''", "train.lr=''", 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.lr=null', 'train.lr=null', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.lr=[0.1,0.2]', 'train.lr=[0.1,0.2]', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.lr={a:1}', 'train.lr={a:1}', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.lr=true', 'train.lr=true', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train.tokens=-1', 'train.tokens=-1 is out of range', 'the default is train.tokens=262144)', 'train'),
    ('train.tokens=1.5', 'train.tokens=1.5', 'train.tokens takes an integer, e.g. 128', 'train'),
    ('train.tokens=null', 'train.tokens=null', 'train.tokens takes an integer, e.g. 128', 'train'),
    ('train.tokens=abc', 'train.tokens=abc', 'train.tokens takes an integer, e.g. 128', 'train'),
    ('train.batch_size=-1', 'train.batch_size=-1 is out of range', 'the default is train.batch_size=16)', 'train'),
    ('train.batch_size=true', 'train.batch_size=true', 'train.batch_size takes an integer, e.g. ', 'train'),
    ("train.schedule=''", 'train.schedule= is out of range', 'e default is train.schedule=cosine)', 'train'),
    ('train.schedule=COSINE', 'train.schedule=COSINE is out of range', 'e default is train.schedule=cosine)', 'train'),
    ('train.schedule=null', 'train.schedule=null', 'train.schedule takes a string', 'train'),
    ("train.device=''", 'train.device= is out of range', ' (the default is train.device=auto)', 'train'),
    ('train.device=cuda:-1', 'train.device=cuda:-1 is out of range', ' (the default is train.device=auto)', 'train'),
    ('train.device=cuda:abc', 'train.device=cuda:abc is out of range', ' (the default is train.device=auto)', 'train'),
    ('train.device=gpu', 'train.device=gpu is out of range', ' (the default is train.device=auto)', 'train'),
    ('train.device=null', 'train.device=null', 'train.device takes a string', 'train'),
    ('train.seed=null', 'train.seed=null', 'train.seed takes an integer, e.g. 128', 'train'),
    ('train.seed=true', 'train.seed=true', 'train.seed takes an integer, e.g. 128', 'train'),
    ('train.seed=[1,2]', 'train.seed=[1,2]', 'train.seed takes an integer, e.g. 128', 'train'),
    ('train.eval_points=1.5', 'train.eval_points=1.5', 'train.eval_points takes an integer, e.g.', 'train'),
    ('train.eval_batches=-1', 'train.eval_batches=-1 is out of range', 'he default is train.eval_batches=8)', 'train'),
    ('train.log_every=abc', 'train.log_every=abc', 'train.log_every takes an integer, e.g. 1', 'train'),
    ('train.min_lr_frac=nan', 'train.min_lr_frac=nan is out of range', 'e default is train.min_lr_frac=0.1)', 'train'),
    ('train.min_lr_frac=2', 'train.min_lr_frac=2.0 is out of range', 'e default is train.min_lr_frac=0.1)', 'train'),
    ('train.decay_frac=-0.1', 'train.decay_frac=-0.1 is out of range', 'he default is train.decay_frac=0.2)', 'train'),
    ('train.decay_frac=nan', 'train.decay_frac=nan is out of range', 'he default is train.decay_frac=0.2)', 'train'),
    ('train.warmup_tokens=abc', 'train.warmup_tokens=abc', 'train.warmup_tokens takes an integer, e.', 'train'),
    ('train.grad_clip=-1', 'train.grad_clip=-1.0 is out of range', 'the default is train.grad_clip=1.0)', 'train'),
    ('train.grad_clip=inf', 'train.grad_clip=inf is out of range', 'the default is train.grad_clip=1.0)', 'train'),
    ('train.beta1=nan', 'train.beta1=nan is out of range', '1) (the default is train.beta1=0.9)', 'train'),
    ('train.beta2=-0.5', 'train.beta2=-0.5 is out of range', ') (the default is train.beta2=0.99)', 'train'),
    ('train.weight_decay=nan', 'train.weight_decay=nan is out of rang', ' default is train.weight_decay=0.0)', 'train'),
    ('train.diverge_factor=nan', 'train.diverge_factor=nan is out of ', 'efault is train.diverge_factor=4.0)', 'train'),
    ('train.diverge_factor=1', 'train.diverge_factor=1.0 is out of ra', 'efault is train.diverge_factor=4.0)', 'train'),
    ('train.checkpoint_every_s=nan', 'train.checkpoint_every_s=nan is o', 's train.checkpoint_every_s=300.0)', 'train'),
    ('train.threads=-1', 'train.threads=-1 is out of range', '24 (the default is train.threads=1)', 'train'),
    ('train.snapshot_steps=[-1]', 'train.snapshot_steps=[-1] is out of', 'of optimiser steps (integers >= 1)', 'train'),
    ('train.snapshot_steps=abc', 'train.snapshot_steps=abc', 'train.snapshot_steps takes a list, e.g. ', 'train'),
    ('train.snapshot_steps=[1.5]', 'train.snapshot_steps=[1.5]', "' could not be converted to Integer", 'train'),
    ('train.fork_from=nonexistent', 'train.fork_from=nonexistent is out', 'must be null or a 16-digit run id', 'train'),
    ("train.fork_from=''", 'train.fork_from= is out of range', 't must be null or a 16-digit run id', 'train'),
    ('train.eval_flops=[abc]', 'train.eval_flops=[abc]', "tr' could not be converted to Float", 'train'),
    ('train.eval_flops={a:1}', 'train.eval_flops={a:1}', 'train.eval_flops takes a list, e.g. [a,b', 'train'),
    ('train.flops=0', 'train.flops=0.0 is out of range', 'or a finite number > 0 and <= 1e+30', 'train'),
    ('train.flops=abc', 'train.flops=abc', 'train.flops takes a number, e.g. 0.003', 'train'),
    ('train.flops=inf', 'train.flops=inf is out of range', 'or a finite number > 0 and <= 1e+30', 'train'),
    ("train.flops=''", "train.flops=''", 'train.flops takes a number, e.g. 0.003', 'train'),
    ("train.precision=''", 'train.precision= is out of range', 'he default is train.precision=auto)', 'train'),
    ('train.precision=FP32', 'train.precision=FP32 is out of range', 'he default is train.precision=auto)', 'train'),
    ('train=bogus', "In 'run'", 'choose one of: default', 'train'),
    ('train.threads=1.5', 'train.threads=1.5', 'train.threads takes an integer, e.g. 128', 'train'),
    ('structure=bogus', "In 'run'", 'choose one of: btt, btt_moe, btt_moe_nor', 'train'),
    ('structure=BTT', "In 'run'", 'choose one of: btt, btt_moe, btt_moe_nor', 'train'),
    ("structure=''", "In 'run'", 'choose one of: btt, btt_moe, btt_moe_nor', 'train'),
    ('structure=btt structure.rank=-1', 'structure.rank=-1 is out of rang', 'must be null or an integer >= 1', 'train'),
    ('structure=btt structure.rank=1.5', 'structure.rank=1.5', 'structure.rank takes an integer, e.g. 12', 'train'),
    ("structure=btt structure.layout=''", 'structure.layout= is out of ran', 'ult is structure.layout=paper)', 'train'),
    ('structure=low_rank structure.rank_frac=0', 'structure.rank_frac=0.0 is ', ' null or a number in (0, 1)', 'train'),
    ('structure=low_rank structure.rank_frac=2', 'structure.rank_frac=2.0 is ', ' null or a number in (0, 1)', 'train'),
    ('structure=low_rank structure.rank_frac=nan', 'structure.rank_frac=nan is', 'null or a number in (0, 1)', 'train'),
    ('structure=kron structure.cores=0', 'structure.cores=0 is out of ran', 'e default is structure.cores=2)', 'train'),
    ('structure=tt structure.rank=0', 'structure.rank=0 is out of range', 't must be null or an integer >= 1', 'train'),
    ('structure=monarch structure.blocks=0', 'structure.blocks=0 is out of ', 'st be null or an integer >= 1', 'train'),
    ('structure=monarch structure.blocks=-1', 'structure.blocks=-1 is out of', 't be null or an integer >= 1', 'train'),
    ('structure=monarch structure.blocks=1000', 'q layer #0 (32 -> 32)', 'set structure.blocks in that range', 'train'),
    ('structure=einsum structure.theta=[1]', 'structure.theta=[1.0] is out ', ' e.g. [0.5,0,0.5,0,0.5,0.5,0]', 'train'),
    ('structure=einsum structure.theta=abc', 'structure.theta=abc', 'tructure.theta takes a list, e.g. [a,b]', 'train'),
    ('structure=einsum structure.theta=[nan,0,0,0,0,0,0]', 'structure.theta=[nan, ', '0.5,0,0.5,0,0.5,0.5,0]', 'train'),
    ('structure=btt_moe structure.experts=0', 'structure.experts=0 is out of', 'ault is structure.experts=8)', 'train'),
    ('structure=btt_moe structure.top_k=0', 'structure.top_k=0 is out of ra', 'default is structure.top_k=2)', 'train'),
    ('structure=btt_moe structure.top_k=100', 'q layer #0 (32 -> 32)', '.experts=8 (experts used per token)', 'train'),
    ('structure.layers=bogus', "structure.layers='bogus' is not a se", "se one of ['all', 'all_but_last', 'i", 'train'),
    ('structure=btt structure.layers=bogus', "structure.layers='bogus' is n", "of ['all', 'all_but_last', 'i", 'train'),
    ('structure=btt structure.layers=[]', 'structure.layers=[] selects not', "f ['all', 'all_but_last', 'int", 'train'),
    ('structure.name=bogus', "structure.name='bogus' is not a known", "ose one of ['btt', 'btt_moe', 'btt_mo", 'train'),
    ('model.width=-64', 'model.width=-64 is out of range', '76 (the default is model.width=128)', 'train'),
    ('model.width=64.5', 'model.width=64.5', 'model.width takes an integer, e.g. 128', 'train'),
    ("model.width=''", "model.width=''", 'model.width takes an integer, e.g. 128', 'train'),
    ('model.width=null', 'model.width=null', 'model.width takes an integer, e.g. 128', 'train'),
    ('model.width=1e2', 'model.width=100 is not a multiple of mod', 'hoose a head_dim that divides the width', 'train'),
    ('model.head_dim=-1', 'model.head_dim=-1 is out of range', ' (the default is model.head_dim=64)', 'train'),
    ('model.head_dim=1000', 'model.width=32 is not a multiple of mo', 'ose a head_dim that divides the width', 'train'),
    ('model.family=bogus', "model.family='bogus' is not known; choos", "choose one of ('gpt2', 'vit', 'mlp')", 'train'),
    ('model.depth=1.5', 'model.depth=1.5', 'model.depth takes an integer, e.g. 128', 'train'),
    ('model.context=-1', 'model.context=-1 is out of range', ' (the default is model.context=128)', 'train'),
    ('model.context=100000000', 'model.context=100000000 is out of ra', ' (the default is model.context=128)', 'train'),
    ('model.ffn_ratio=-1', 'model.ffn_ratio=-1.0 is out of range', 'the default is model.ffn_ratio=4.0)', 'train'),
    ('model.ffn_ratio=nan', 'model.ffn_ratio=nan is out of range', 'the default is model.ffn_ratio=4.0)', 'train'),
    ('model.ffn_experts=10000000', 'model.ffn_experts=10000000 is out ', 'he default is model.ffn_experts=0)', 'train'),
    ('model.ffn_experts=4 model.ffn_top_k=100', 'model.ffn_top_k=100 must be ', '=4 (experts used per token)', 'train'),
    ('model.attn_scale=inf', 'model.attn_scale=inf is out of range', 'he default is model.attn_scale=8.0)', 'train'),
    ('model.input_lr_mult=0', 'model.input_lr_mult=0.0 must be > 0 (i', "it multiplies the input layer's lr)", 'train'),
    ('model.input_lr_mult=-1', 'model.input_lr_mult=-1.0 is out of ra', 'default is model.input_lr_mult=1.0)', 'train'),
    ('model.patch_size=-1', 'model.patch_size=-1 is out of range', '(the default is model.patch_size=4)', 'train'),
    ("model.pool=''", 'model.pool= is out of range', 'ean (the default is model.pool=cls)', 'train'),
    ("model.parametrization=''", 'model.parametrization= is out of ra', 'el.parametrization=structure_aware)', 'train'),
    ('model.tie_head=null', 'model.tie_head=null', 'write model.tie_head=true or model.tie_h', 'train'),
    ('model.width=٣٢', 'model.width=٣٢', "type ASCII digits ('٣' is 3)", 'train'),
    ('data=bogus', "In 'run'", 'choose one of: cifar10, fashion_mnist, s', 'train'),
    ('data.name=bogus', "data.name='bogus' is not a text source", ' use one of shakespeare, files, owt', 'train'),
    ('data.kind=bogus', "model=gpt2 needs text data but data.kind='bogus'; ", 'use data=shakespeare', 'train'),
    ("data.tokenizer=''", 'data.tokenizer= is out of range', 'the default is data.tokenizer=byte)', 'train'),
    ('data.val_fraction=nan', 'data.val_fraction=nan is out of range', ' default is data.val_fraction=0.05)', 'train'),
    ('data.val_fraction=-0.5', 'data.val_fraction=-0.5 is out of rang', ' default is data.val_fraction=0.05)', 'train'),
    ('data.name=files data.path=/nonexistent/x', "data.path='/nonexistent/x' ", 'file, a directory or a glob', 'train'),
    ('data.vocab_size=-1', 'data.vocab_size=-1 is out of range', 'the default is data.vocab_size=512)', 'train'),
    ('data.vocab_size=abc', 'data.vocab_size=abc', 'data.vocab_size takes an integer, e.g. 1', 'train'),
    ('data.augment=null', 'data.augment=null', 'write data.augment=true or data.augment=', 'train'),
    ('logger.mode=ONLINE', 'logger.mode=ONLINE is out of range', 'or one of online, offline, disabled', 'train'),
    ('logger.tags=null', 'logger.tags=null', 'logger.tags takes a list, e.g. [a,b]', 'train'),
    ('logger.project=null', 'logger.project=null', 'logger.project takes a string', 'train'),
    ('logger.name=[a]', 'logger.name=[a]', 'logger.name takes a string', 'train'),
    ('logger=bogus', "In 'run'", 'choose one of: disabled, wandb', 'train'),
    ('label=[a]', 'label=[a]', 'label takes a string', 'train'),
    ('sweep=[a]', 'sweep=[a]', 'sweep takes a string', 'train'),
    ('model=mlp data=shakespeare', 'model=mlp needs image or teacher data but data', 'use data=fashion_mnist', 'train'),
    ('model=gpt2 data=cifar10', "model=gpt2 needs text data but data.kind='image'; ", 'use data=shakespeare', 'train'),
    ('train.lr = 0.1', "=: no setting before '='", 'write key=value', 'train'),
    ('train.lr=', 'train.lr=', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('train..lr=1', 'train..lr=1', 'a list as key=[a,b])', 'train'),
    ('train.lr=1=2', 'train.lr=1=2', 'a list as key=[a,b])', 'train'),
    ('~train.lr', '~train.lr', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('++train.lrr=1', 'train.lrr is not a setting; did you mean train.lr?', 'did you mean train.lr?', 'train'),
    ('+model.width=64', 'Could not append to config. An item is alrea', "e 'model.width': '++model.width=64'", 'train'),
    ('train.lr=0.1,0.2', "Ambiguous value for argument 'train.lr=0.1,", '. To sweep over it, add --multirun ', 'train'),
    ('train.lr=1e−3', 'train.lr=1e−3', "type the ASCII '-'", 'train'),
    ('train.lr=0.1\u200b', 'train.lr=0.1\u200b', "type ASCII, or quote the value: key='val", 'train'),
    ('tráin.lr=1', 'tráin.lr=1', "type ASCII, or quote the value: key='val", 'train'),
    ('train.lr=0.1 train.lr=abc', 'train.lr=abc', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('-m train.lr=0.1,abc', 'train.lr=abc', 'train.lr takes a number, e.g. 0.003', 'train'),
    ('--multirun train.lrr=1,2', 'train.lrr is not a setting', 'did you mean train.lr?', 'train'),
    ('-m structure=dense,bogus', "In 'run'", 'choose one of: btt, btt_moe, btt_moe_nor', 'train'),
    ('hydra.job.chdir=true', 'hydra.job.chdir=true', 'use cluster=slurm (or cluster=local, clu', 'train'),
    ("train.lr='abc", "train.lr='abc", 'a list as key=[a,b])', 'train'),
    ('model.width=\x1b[31m', 'model.width=\x1b[31m', 'a list as key=[a,b])', 'train'),
    ('dry_run=null', 'dry_run=null', 'write dry_run=true or dry_run=false', 'launch'),
    ("dry_run=''", "dry_run=''", 'write dry_run=true or dry_run=false', 'launch'),
    ('retry_failed=abc', 'retry_failed=abc', 'write retry_failed=true or retry_failed=', 'launch'),
    ('estimate_time=2', 'estimate_time=2', 'write estimate_time=true or estimate_tim', 'launch'),
    ('max_runs=-1', 'max_runs=-1 is out of range', '_000 (the default is max_runs=2000)', 'launch'),
    ('max_runs=abc', 'max_runs=abc', "' could not be converted to Integer", 'launch'),
    ('max_runs=1.5', 'max_runs=1.5', "' could not be converted to Integer", 'launch'),
    ('cluster.timeout_min=-5', 'cluster.timeout_min=-5 is out of ran', ' default is cluster.timeout_min=60)', 'launch'),
    ('cluster.timeout_min=abc', 'cluster.timeout_min=abc', 'cluster.timeout_min takes an integer, e.', 'launch'),
    ('cluster.mem_gb=nan', 'cluster.mem_gb=nan is out of range', 'or a finite number > 0 and <= 1e+06', 'launch'),
    ('cluster.mem_gb=-1', 'cluster.mem_gb=-1.0 is out of range', 'or a finite number > 0 and <= 1e+06', 'launch'),
    ('cluster.partition=[a]', 'cluster.partition=[a]', 'cluster.partition takes a string', 'launch'),
    ('cluster.setup=abc', 'cluster.setup=abc', 'cluster.setup takes a list, e.g. [a,b]', 'launch'),
    ('cluster=bogus', "In 'launch'", 'choose one of: debug, local, slurm', 'launch'),
    ('cluster.cpus_per_task=1000000', 'cluster.cpus_per_task=1000000 is', 'ault is cluster.cpus_per_task=2)', 'launch'),
    ('cluster.parallel_jobs=-1', 'cluster.parallel_jobs=-1 is out of ', 'll or an integer >= 1 and <= 4_096', 'launch'),
    ('cluster.runs_per_job=abc', 'cluster.runs_per_job=abc', 'cluster.runs_per_job takes an integer, e', 'launch'),
    ('cluster.wait=null', 'cluster.wait=null', 'write cluster.wait=true or cluster.wait=', 'launch'),
    ('overrides=[train.lrr=1]', "sweep 'tiny'", 'did you mean train.lr?', 'launch'),
    ('overrides=[model.width=64]', 'model.width=64', "edit the sweep's values instead (or copy", 'launch'),
    ("sweep_dir=''", 'sweep folder "\'\'" (sweep_dir= or $SCALING_SWEE', 'give a folder of sweep YAML files', 'launch'),
    ('cluster.max_num_timeout=abc', 'cluster.max_num_timeout=abc', 'luster.max_num_timeout takes an integer', 'launch'),
    ('cluster.signal_delay_s=1e9', 'cluster.signal_delay_s=1e9', 'cluster.signal_delay_s takes an integer,', 'launch'),
    ("cluster.kind=''", 'cluster.kind= is out of range', '(the default is cluster.kind=local)', 'launch'),
    ('train.lr=abc', "sweep 'tiny'", 'train.lr takes a number, e.g. 0.003', 'launch'),
    ('model.qk_norm=null', "sweep 'tiny'", 'write model.qk_norm=true or model.qk_nor', 'launch'),
    ('cancel=maybe', 'cancel=maybe', 'write cancel=true or cancel=false', 'status'),
    ("wait=''", "wait=''", 'write wait=true or wait=false', 'status'),
    ('model.width=abc', 'model.width=abc', "edit the sweep's values instead (or copy", 'status'),
    ('-m', 'scaling.status has no -m/--multirun', 'ython -m scaling.launch +sweep=FILE', 'status'),
    ('max_runs=-1', 'max_runs=-1 is out of range', '_000 (the default is max_runs=2000)', 'status'),
    ('--jsn', 'unrecognized arguments', 'usage: python -m scaling.describe [--jso', 'describe'),
    ('structure=bogus', "In 'run'", 'choose one of: btt, btt_moe, btt_moe_nor', 'describe'),
    ('train.lr=nan', 'train.lr=nan is out of range', '+06 (the default is train.lr=0.003)', 'describe'),
    ('data.vocab_size=abc', 'data.vocab_size=abc', 'data.vocab_size takes an integer, e.g. 1', 'describe'),
    ('-m model.width=32,64', 'scaling.describe has no -m/--multiru', 'ython -m scaling.launch +sweep=FILE', 'describe'),
    ('train.tokens=-1', 'train.tokens=-1 is out of range', 'the default is train.tokens=262144)', 'describe'),
    ("train.lr=${oc.env:SCALING_NO_SUCH_VAR}", "train.lr=${oc.env:SCALING_NO_SUCH_VAR}: a ${...} value cannot be "
     "resolved", "give a plain value, or set what it names", "train"),
    ("model.width=${nope}", "model.width=${nope}: a ${...} value cannot be resolved", "give a plain value", "train"),
    ("=1", "=1: no setting before '='", "write key=value, e.g. train.seed=1", "train"),
    ("data.cache_dir=''", "data.cache_dir='' is empty", "give a folder path", "train"),
    ("+sweep={dir}/files/empty.yaml", "empty.yaml: the file is empty", "see sweeps/quickstart.yaml", "launch"),
    ("+sweep={dir}/files/comment.yaml", "comment.yaml: the file is empty", "see sweeps/quickstart.yaml", "launch"),
    ("+sweep={dir}/files/empty.yaml", "empty.yaml: the file is empty", "see sweeps/quickstart.yaml", "status"),
    ("+sweep={dir}/files/defaults.yaml", "defaults is not a key of a sweep", "rename it", "launch"),
    # issue 23, probe 2: sweep files and launch
    ("+sweep={dir}/files/nullvariant.yaml", "variant 'a' must be a mapping {overrides: [...]",
     "({} for none of its own)", "launch"),
    ("+sweep={dir}/files/emptylabel.yaml", "variant label must be a name", "such as btt_r4", "launch"),
    ("+sweep={dir}/files/intlabel.yaml", "variant label must be a name", "got 1", "launch"),
    ("+sweep={dir}/files/dupaxis.yaml", "axes.train.seed lists 1 more than once", "list it once", "launch"),
    ("+sweep={dir}/files/dupvariantaxis.yaml", "variant 'a' axes.train.seed lists 1 more than once", "list it once",
     "launch"),
    ("+sweep={dir}/files/dupladder.yaml", "ladder[0].axes.model.width lists 32 more than once", "list it once",
     "launch"),
    ("+sweep={dir}/files/overaxis.yaml", "variant 'a' overrides model.width=64, but model.width is swept by axes",
     "give the variant its own axis instead, axes: {model.width: [64]}", "launch"),
    ("+sweep={dir}/files/overownaxis.yaml", "train.seed is swept by the axes of variant 'a'", "drop the override",
     "launch"),
    ("+sweep={dir}/files/overbudget.yaml", "overrides train.tokens=8192, but train.tokens is swept by budgets",
     "drop the override", "launch"),
    ("+sweep={dir}/files/bogusaxis.yaml", "bogus.key is not a setting", "the settings here are model, structure",
     "launch"),
    ("+sweep={dir}/files/typoaxis.yaml", "trian.seed is not a setting", "did you mean train.seed?", "launch"),
    ("+sweep={dir}/files/nullbase.yaml", "base must be a list of override strings", "got null", "launch"),
    ("+sweep={dir}/files/nullaxes.yaml", "axes must be a mapping {override key: [values]}", "got null", "launch"),
    ("+sweep={dir}/files/bomb.yaml", "bomb.yaml: its YAML aliases (*name) expand it to 490,329,066 values",
     "repeat fewer aliases", "launch"),
    ("+sweep={dir}/files/selfalias.yaml", "a YAML alias (*name) lies inside the node its anchor", "fix the file's YAML",
     "launch"),
    ("+sweep={dir}/files/deep.yaml", "deep.yaml: nested too deeply to be read", "fix the file's YAML", "launch"),
    ("cluster.additional_parameters=abc", "cluster.additional_parameters=abc", "takes a mapping of sbatch options, "
     "e.g. cluster.additional_parameters={constraint:a100}", "launch"),
    ("overrides=abc", "overrides=abc", "takes a list of key=value run overrides, e.g. 'overrides=[train.seed=1",
     "launch"),
    ("cluster.tasks_per_node=1000", "cluster.tasks_per_node=1000: cluster=local runs one task per job",
     "set cluster.tasks_per_node=1 (or launch with cluster=slurm)", "launch"),
    ("cluster=debug cluster.tasks_per_node=2", "cluster=debug runs one task per job", "set cluster.tasks_per_node=1",
     "launch"),
    ("+sweep=tiny +sweep=huge", "+sweep=tiny +sweep=huge: a launch runs one sweep", "give +sweep once", "launch"),
    ("dry_run=true results_root=/proc/x", "results_root=/proc/x", "set results_root=DIR to a writable folder",
     "launch"),
    ("dry_run=true estimate_time=false results_root=/proc/x", "results_root=/proc/x",
     "set results_root=DIR to a writable folder", "launch"),
    ("dry_run=true results_root=/sys/kernel", "results_root=/sys/kernel", "set results_root=DIR to a writable folder",
     "launch"),
    # issue 23, probe 2: train, status, describe
    ("structure=kron structure.cores=100", "kron with structure.cores=100 splits each width into 100 factors",
     "needs widths >= 2^100, but this layer is 32 -> 32; set structure.cores to at most 5", "train"),
    ("structure=tt structure.cores=6", "tt with structure.cores=6", "set structure.cores to at most 5", "describe"),
    ("structure=[btt,dense]", "structure=[btt,dense]: structure takes one name, not a list",
     "choose one of: btt, btt_moe, btt_moe_norm, btt_norm, dense", "train"),
    ("model=[gpt2]", "model=[gpt2]: model takes one name", "choose one of: gpt2, mlp, vit", "describe"),
    ("data.cache_dir=/proc/nope", "data.cache_dir=/proc/nope: cannot write the token cache", "give a writable folder",
     "train"),
    ("data.cache_dir=/proc/nope", "data.cache_dir=/proc/nope", "give a writable folder", "describe"),
    ("data.name=files data.path=/nonexistent/x", "data.path='/nonexistent/x' matches no files",
     "give a text file, a directory or a glob", "describe"),
    ("logger.tags=[a,[b]]", "logger.tags=['a', ['b']]", "must be a list of strings, e.g. [a,b]", "train"),
    ("logger.tags=[a,{b:1}]", "logger.tags=['a', {'b': 1}]", "must be a list of strings", "train"),
    ("--cfg nope", "argument --cfg/-c: invalid choice: 'nope'", "(choose from 'job', 'hydra', 'all'); see python -m "
     "scaling.train --help", "train"),
    ("--info bogus", "argument --info/-i: invalid choice: 'bogus'", "choose from 'all', 'config'", "train"),
    ("bogus=1", "bogus is not a setting", "the settings here are model, structure, data, train, logger", "train"),
    ("seed=1", "seed is not a setting", "did you mean train.seed?", "train"),
    ("bogus=1", "bogus is not a setting", "the settings here are sweep, cluster, dry_run", "status"),
    ("cluster.bogus=1", "cluster.bogus is not a setting", "the settings here are cluster.kind", "status"),
    ("model.family=bogus", "model.family='bogus' is not known", "choose one of ('gpt2', 'vit', 'mlp')", "describe"),
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
    "empty.yaml": "",
    "comment.yaml": "# nothing here\n",
    "defaults.yaml": "defaults: &d {tokens: [4096]}\nname: defaults\nbudgets: {<<: *d}\n",
    # issue 23, probe 2: sweep files and launch
    "nullvariant.yaml": "name: nullvariant\nvariants: {a: null}\nbudgets: {tokens: [4096]}\n",
    "emptylabel.yaml": "name: emptylabel\nvariants: {'': {overrides: [structure=btt]}}\nbudgets: {tokens: [4096]}\n",
    "intlabel.yaml": "name: intlabel\nvariants: {1: {overrides: [structure=btt]}}\nbudgets: {tokens: [4096]}\n",
    "dupaxis.yaml": "name: dupaxis\naxes: {train.seed: [1, 1]}\nbudgets: {tokens: [4096]}\n",
    "dupvariantaxis.yaml": "name: dupvariantaxis\nvariants: {a: {axes: {train.seed: [1, 1]}}}\n"
                           "budgets: {tokens: [4096]}\n",
    "dupladder.yaml": "name: dupladder\nvariants: {a: {ladder: [{tokens: 4096, axes: {model.width: [32, 32]}}]}}\n",
    "overaxis.yaml": "name: overaxis\naxes: {model.width: [32, 48]}\nvariants: {a: {overrides: [model.width=64]}}\n"
                     "budgets: {tokens: [4096]}\n",
    "overownaxis.yaml": "name: overownaxis\nvariants: {a: {overrides: [train.seed=3], axes: {train.seed: [1, 2]}}}\n"
                        "budgets: {tokens: [4096]}\n",
    "overbudget.yaml": "name: overbudget\nvariants: {a: {overrides: [train.tokens=8192]}}\nbudgets: {tokens: [4096]}\n",
    "bogusaxis.yaml": "name: bogusaxis\nbase: [model=gpt2]\naxes: {bogus.key: [1]}\nbudgets: {tokens: [4096]}\n",
    "typoaxis.yaml": "name: typoaxis\nbase: [model=gpt2]\naxes: {trian.seed: [1]}\nbudgets: {tokens: [4096]}\n",
    "nullbase.yaml": "name: nullbase\nbase: null\nbudgets: {tokens: [4096]}\n",
    "nullaxes.yaml": "name: nullaxes\naxes: null\nbudgets: {tokens: [4096]}\n",
    "bomb.yaml": "name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(  # billion laughs: 9^9 values
        f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi")),
    "selfalias.yaml": "name: selfalias\nbase: &b [model=gpt2, *b]\n",
    "deep.yaml": "name: deep\nbase: " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.fixture(autouse=True)
def no_sweep_group_yet():
    """Each row runs as in a fresh process: no `sweep` config group left registered by an earlier test's launch
    (with one, Hydra reads scaling.train's `sweep=...` setting as a group override)."""
    ConfigStore.instance().repo.pop("sweep", None)


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
    argv = [*args.replace("{dir}", str(sweeps_dir)).split(), *([] if "results_root=" in args else
                                                                [f"results_root={root}"])]
    sweep = [] if args.startswith("+sweep=") else ["+sweep=tiny"]
    if entry in ("launch", "status"):
        code = {"launch": launch_main, "status": status_main}[entry]([*sweep, *argv])
    else:
        code = {"train": train_main, "describe": describe_main}[entry]([*TINY_BASE, *argv])
    assert_one_clear_line(code, capsys.readouterr(), field, fix)
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
