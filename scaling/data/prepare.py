"""Build (or check) a run's data once and print its statistics.

    python -m scaling.data.prepare data=shakespeare data.tokenizer=bpe data.vocab_size=1024
    python -m scaling.data.prepare data.name=files data.path='notes/*.txt' data.tokenizer=char
    python -m scaling.data.prepare data.name=owt data.tokenizer=gpt2 data.val_fraction=0.0005 --num-proc 16
        (cluster: downloads ~40 GB of OpenWebText; data.path may name a local copy or another hub id)
    python -m scaling.data.prepare data=cifar10 data.path=/datasets --download

Arguments other than the flags are Hydra overrides of conf/run.yaml (see scaling.config.compose.compose_run_config).
"""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import argparse
import os
import sys
from typing import Any, Sequence

from scaling.config.compose import compose_run_config
from scaling.data import build_data, data_info
from scaling.data.image_files import download_cifar, image_root, image_spec
from scaling.data.token_cache import ensure_cache


def prepare_text(cfg: Any, num_proc: int) -> list[str]:
    cache = ensure_cache(cfg, allow_download=True, num_proc=num_proc)
    m = cache.meta
    lines = [
        f"cache       {cache.directory}",
        f"source      {m['source']}",
        f"tokenizer   {m['tokenizer']} (vocab {m['vocab_size']})",
        f"split       {m['split']} (val_fraction {m['val_fraction']})",
        f"train       {m['train_tokens']:,} tokens",
        f"val         {m['val_tokens']:,} tokens",
        f"tokens_sha256 {m['tokens_sha256']}",
    ]
    if "val_bytes" in m:
        lines.insert(6, f"val bytes/token {m['val_bytes'] / m['val_tokens']:.3f}; "
                        f"val unigram entropy {m['val_unigram_entropy_nats']:.4f} nats/token")
    return lines


def prepare_images(cfg: Any, download: bool) -> list[str]:
    if download:
        download_cifar(cfg.name, image_root(cfg))
    bundle = build_data(cfg, context=0, batch_size=1, seed=0)
    x, _ = bundle.train.next_batch()
    return [
        f"dataset     {cfg.name} from {image_root(cfg)}",
        f"input       {bundle.info.input_shape}, {bundle.info.num_classes} classes, "
        f"{image_spec(cfg.name).shape} images",
        f"batch       x {tuple(x.shape)} {x.dtype}",
    ]


def prepare_teacher(cfg: Any) -> list[str]:
    bundle = build_data(cfg, context=0, batch_size=1, seed=0)
    _, y = bundle.eval_batches(1, cfg.eval_examples)[0]
    return [
        f"teacher     {cfg.input_dim} -> {cfg.teacher_width} x {cfg.teacher_depth} -> {bundle.info.output_dim}, "
        f"seed {cfg.teacher_seed}",
        f"held-out    {cfg.eval_examples} examples, target mean {y.mean():.4f}, variance {y.var():.4f} "
        "(the MSE of predicting the mean)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=shakespeare data.tokenizer=bpe")
    parser.add_argument("--download", action="store_true", help="images: download CIFAR into data.path first")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="owt: tokenising processes")
    args = parser.parse_intermixed_args(argv)
    cfg = compose_run_config(args.overrides)
    data = cfg.data
    try:
        if data.kind == "text":
            lines = prepare_text(data, args.num_proc)
            data_info(data, cfg.model.context)  # checks that one context window fits in each split
        elif data.kind == "image":
            lines = prepare_images(data, args.download)
        else:
            lines = prepare_teacher(data)
    except (FileNotFoundError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
