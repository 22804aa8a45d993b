"""Token caches: a corpus tokenised once into memmapped uint16 files, reused by every run that asks for it.

Layout, under data.cache_dir:
    <source>-<tokenizer>[-<vocab>]-val<fraction>/
        train.bin, val.bin   uint16 token ids (raw, native little-endian), read with np.memmap
        meta.json            tokenizer, vocab size, token/byte counts, source, content hashes (written last)
        chars.json | tokenizer.json   the learned vocabulary, for char / bpe
<source> is `shakespeare`, `owt`, or `files-<hash of the files' paths, sizes and mtimes>` (so edited files get a
fresh cache). A cache is built in a temp directory and renamed into place while holding `<dir>.lock`, so processes
that start at once build it once; a directory that exists is complete.

Validation split: the tail of the corpus, held out whole. For in-memory corpora (shakespeare, files) it is the
last val_fraction of the text, cut at a line break, the same text for every tokenizer; the char/BPE vocabulary is
learned from the training text only. For OpenWebText it is the last val_fraction of the documents.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from scaling.data import corpora
from scaling.data.tokenizers import Tokenizer, check_tokenizer, load_tokenizer, train_tokenizer

CACHE_VERSION = 1
TEXT_SOURCES = ("shakespeare", "files", "owt")
OWT_TOKENIZERS = ("byte", "gpt2")  # tokenisers that need no vocabulary learned from the whole corpus
SPLITS = ("train", "val")


@dataclass(frozen=True)
class TokenCache:
    """An opened cache: its metadata and read-only memmaps of the splits."""

    directory: Path
    meta: dict[str, Any]

    def tokens(self, split: str) -> np.memmap:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        return np.memmap(self.directory / f"{split}.bin", dtype=np.uint16, mode="r")

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.meta["tokenizer"], self.directory, gpt2_files_dir(self.directory.parent))


def gpt2_files_dir(cache_dir: Path) -> Path:
    """Where GPT-2's vocab.json + merges.txt are looked for when tiktoken is not installed."""
    return cache_dir / "gpt2-tokenizer"


def check_text_config(cfg: Any) -> None:
    if cfg.name not in TEXT_SOURCES:
        raise ValueError(f"data.name={cfg.name!r} is not a text source: use one of {', '.join(TEXT_SOURCES)}")
    check_tokenizer(cfg.tokenizer)
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={cfg.val_fraction} must be in (0, 1), e.g. 0.05")
    if cfg.name == "owt" and cfg.tokenizer not in OWT_TOKENIZERS:
        raise ValueError(
            f"data.tokenizer={cfg.tokenizer} is not supported for data.name=owt: use one of {', '.join(OWT_TOKENIZERS)}"
        )


def files_fingerprint(files: list[Path]) -> str:
    """Hash of the files' paths, sizes and modification times: cheap, and changes when a file is edited."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def cache_path(cfg: Any) -> Path:
    """The cache directory a text config reads (see the module docstring for the naming)."""
    check_text_config(cfg)
    source = cfg.name
    if source == "files":
        source = f"files-{files_fingerprint(corpora.resolve_text_files(cfg.path))}"
    parts = [source, cfg.tokenizer] + ([str(cfg.vocab_size)] if cfg.tokenizer == "bpe" else [])
    parts.append(f"val{cfg.val_fraction:g}")
    return Path(cfg.cache_dir).expanduser().resolve() / "-".join(parts)


def open_cache(directory: Path) -> TokenCache:
    """Open a built cache, checking that its files match its metadata."""
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(
            f"token cache {directory} has version {meta.get('version')}, expected {CACHE_VERSION}: delete it"
        )
    for split in SPLITS:
        path, tokens = directory / f"{split}.bin", meta[f"{split}_tokens"]
        if path.stat().st_size != 2 * tokens:
            raise ValueError(
                f"{path} has {path.stat().st_size} bytes but meta.json says {tokens} tokens: delete {directory}"
            )
    return TokenCache(directory, meta)


def ensure_cache(cfg: Any, *, allow_download: bool = False, num_proc: int = 1) -> TokenCache:
    """Open the cache for `cfg`, building it first if needed (OpenWebText only when allow_download)."""
    target = cache_path(cfg)
    if (target / "meta.json").is_file():
        return open_cache(target)
    if cfg.name == "owt" and not allow_download:
        raise FileNotFoundError(
            f"OpenWebText tokens are not at {target}: build them once with "
            f"`python -m scaling.data.prepare data.name=owt data.tokenizer={cfg.tokenizer}` "
            "(downloads ~40 GB; data.path may name a local copy of the dataset)"
        )
    lock = target.with_name(target.name + ".lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:  # no such place (/proc/x), read-only, no permission
        raise ValueError(f"data.cache_dir={cfg.cache_dir}: cannot write the token cache in {target.parent} "
                         f"({err.strerror}); give a writable folder, data.cache_dir=DIR") from None
    with _file_lock(lock):
        if not (target / "meta.json").is_file():
            _build_atomically(cfg, target, num_proc)
    return open_cache(target)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock; waits while another process builds the same cache."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_atomically(cfg: Any, target: Path, num_proc: int) -> None:
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        meta = _build_owt(cfg, tmp, num_proc) if cfg.name == "owt" else _build_in_memory(cfg, tmp)
        meta.update(version=CACHE_VERSION, dtype="uint16", val_fraction=cfg.val_fraction, name=cfg.name)
        _write_synced(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True).encode())
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every run (and user) of this cache_dir
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():  # not a lost race (locks can fail on network filesystems)
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): val is the last val_fraction of the characters, moved to start after the next line break
    (the previous one when no break after the cut leaves text behind it; the exact character in text without
    line breaks)."""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut, len(text) - 1)
    if newline < 0:
        newline = text.rfind("\n", 0, cut)
    cut = cut if newline < 0 else newline + 1
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(
            f"data.val_fraction={val_fraction} leaves an empty train or validation split of a {len(text)}-character "
            "corpus: use more text (data.path) or a val_fraction further from 0 and 1"
        )
    return train, val


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats/token) of the empirical token distribution: H = -sum_v p_v ln p_v.

    On the validation split this is the lowest loss any unigram model reaches there, the baseline a language
    model must beat.
    """
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _build_in_memory(cfg: Any, out: Path) -> dict[str, Any]:
    corpus = corpora.shakespeare_corpus() if cfg.name == "shakespeare" else corpora.files_corpus(cfg.path)
    text = "\n\n".join(corpus.documents)
    train_text, val_text = split_text(text, cfg.val_fraction)
    tokenizer = train_tokenizer(cfg.tokenizer, train_text, cfg.vocab_size, gpt2_files_dir(out.parent))
    tokenizer.save(out)
    tokens_hash = hashlib.sha256()
    meta: dict[str, Any] = {}
    for split, part in (("train", train_text), ("val", val_text)):
        ids = tokenizer.encode(part)
        _write_synced(out / f"{split}.bin", ids.tobytes())
        tokens_hash.update(ids.tobytes())
        meta[f"{split}_tokens"] = int(ids.size)
        meta[f"{split}_bytes"] = len(part.encode("utf-8"))
        if split == "val":
            meta["val_unigram_entropy_nats"] = unigram_entropy(ids, tokenizer.vocab_size)
    return meta | {
        "source": corpus.source,
        "documents": len(corpus.documents),
        "files": corpus.files,
        "split": "last val_fraction of the text, cut at a line break",
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "tokens_sha256": tokens_hash.hexdigest(),
    }


# --- OpenWebText (cluster users; needs `datasets` and network or a local copy) -----------------------------------


class _EncodeDocuments:
    """datasets.map function: text -> ids + separator. It builds its tokenizer lazily, so worker processes get a
    cheap picklable object."""

    def __init__(self, tokenizer: str, gpt2_files: Path) -> None:
        self.name, self.gpt2_files = tokenizer, gpt2_files
        self._tokenizer: Tokenizer | None = None

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        if self._tokenizer is None:
            self._tokenizer = train_tokenizer(self.name, "", 0, self.gpt2_files)
        sep = np.asarray(self._tokenizer.separator, dtype=np.uint16)
        ids = [np.concatenate([self._tokenizer.encode(text), sep]) for text in batch["text"]]
        return {"ids": ids, "length": [int(x.size) for x in ids]}


def _build_owt(cfg: Any, out: Path, num_proc: int) -> dict[str, Any]:
    """Download (or read data.path), split off the last val_fraction of documents, tokenise in parallel, and
    write each split to its memmap shard by shard, so the corpus never has to fit in memory."""
    dataset = corpora.openwebtext_dataset(cfg.path, num_proc)
    n_docs = len(dataset)
    n_val = max(1, round(cfg.val_fraction * n_docs))
    splits = {"train": dataset.select(range(n_docs - n_val)), "val": dataset.select(range(n_docs - n_val, n_docs))}
    encode = _EncodeDocuments(cfg.tokenizer, gpt2_files_dir(out.parent))
    tokens_hash = hashlib.sha256()
    meta: dict[str, Any] = {}
    for split, docs in splits.items():
        tokenized = docs.map(encode, batched=True, remove_columns=docs.column_names, num_proc=num_proc)
        total = int(np.sum(tokenized["length"], dtype=np.int64))
        array = np.memmap(out / f"{split}.bin", dtype=np.uint16, mode="w+", shape=(total,))
        n_shards, pos = max(1, min(1024, len(tokenized) // 1000)), 0
        for shard in range(n_shards):
            part = tokenized.shard(n_shards, shard, contiguous=True).with_format("numpy")
            chunk = np.concatenate(list(part["ids"])).astype(np.uint16)
            array[pos : pos + chunk.size] = chunk
            tokens_hash.update(chunk.tobytes())
            pos += chunk.size
        array.flush()
        del array
        meta[f"{split}_tokens"] = total
        meta[f"{split}_documents"] = len(docs)
    tokenizer = train_tokenizer(cfg.tokenizer, "", 0, gpt2_files_dir(out.parent))
    return meta | {
        "source": f"OpenWebText ({cfg.path or corpora.OPENWEBTEXT_DEFAULT})",
        "datasets_fingerprint": dataset._fingerprint,
        "split": "last val_fraction of the documents",
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "tokens_sha256": tokens_hash.hexdigest(),
    }
