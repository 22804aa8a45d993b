"""Tokenisers that turn text into uint16 token ids: byte-level, char-level, a locally trained BPE, GPT-2's BPE.

Char and BPE vocabularies are learned from the training text only and saved next to the token files, so a
cached dataset can always be decoded and re-encoded with exactly the tokenizer that built it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np

from scaling.config.schema import TOKENIZERS  # noqa: F401  (the names live with the schema)

MAX_VOCAB = 2**16  # ids are stored as uint16
ENCODE_CHUNK_CHARS = 1 << 16  # BPE encodes the text in line-aligned chunks of about this size, in parallel


class Tokenizer(Protocol):
    """Text <-> token ids. `separator` ends every document when documents are streamed (OpenWebText)."""

    name: str
    vocab_size: int
    separator: list[int]

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: Path) -> None: ...


class ByteTokenizer:
    """UTF-8 bytes: vocab 256, nothing to learn, any text round-trips."""

    name = "byte"
    vocab_size = 256

    def __init__(self) -> None:
        self.separator = self.encode("\n\n").tolist()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def save(self, directory: Path) -> None:
        """Nothing to save: the byte vocabulary is fixed."""


class CharTokenizer:
    """One id per Unicode character seen in the training text (sorted), plus a last id for unseen characters."""

    name = "char"
    FILE = "chars.json"

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("a char vocabulary needs distinct characters from a non-empty training text")
        self.chars = "".join(sorted(chars))
        self.unknown = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        if self.vocab_size > MAX_VOCAB:
            raise ValueError(f"the text has {len(self.chars)} distinct characters, more than uint16 ids can hold")
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self.separator = self.encode("\n\n").tolist()

    @staticmethod
    def train(text: str) -> "CharTokenizer":
        return CharTokenizer("".join(set(text)))

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        return np.where(known, ids, self.unknown).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] if i < self.unknown else "\ufffd" for i in map(int, ids))

    def save(self, directory: Path) -> None:
        (directory / self.FILE).write_text(json.dumps({"chars": self.chars}), encoding="utf-8")

    @staticmethod
    def load(directory: Path) -> "CharTokenizer":
        return CharTokenizer(json.loads((directory / CharTokenizer.FILE).read_text(encoding="utf-8"))["chars"])


def line_chunks(text: str, size: int = ENCODE_CHUNK_CHARS) -> Iterator[str]:
    """Consecutive pieces of `text` of about `size` characters, each ending after a newline when one exists."""
    start = 0
    while start < len(text):
        stop = text.find("\n", start + size)
        stop = len(text) if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation) trained with the `tokenizers` library; no unknown tokens."""

    name = "bpe"
    FILE = "tokenizer.json"

    def __init__(self, backend: "tokenizers.Tokenizer") -> None:  # noqa: F821 - imported lazily
        self._backend = backend
        self.vocab_size = backend.get_vocab_size()
        self.separator = self.encode("\n\n").tolist()

    @staticmethod
    def train(text: str, vocab_size: int) -> "BPETokenizer":
        """Learn merges on `text` until the vocabulary (256 bytes + merges) has `vocab_size` entries."""
        from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

        if not 257 <= vocab_size <= MAX_VOCAB:
            raise ValueError(
                f"data.vocab_size={vocab_size} is out of range for tokenizer=bpe: use 257..{MAX_VOCAB} "
                "(256 byte tokens plus at least one merge; ids are stored as uint16)"
            )
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        backend.train_from_iterator(line_chunks(text), trainer=trainer)
        return BPETokenizer(backend)

    def encode(self, text: str) -> np.ndarray:
        encodings = self._backend.encode_batch(list(line_chunks(text)))
        ids = [np.asarray(e.ids, dtype=np.uint16) for e in encodings]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return self._backend.decode([int(i) for i in ids])

    def save(self, directory: Path) -> None:
        self._backend.save(str(directory / self.FILE))

    @staticmethod
    def load(directory: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer as Backend

        return BPETokenizer(Backend.from_file(str(directory / BPETokenizer.FILE)))


class GPT2Tokenizer:
    """GPT-2's BPE (50257 ids; <|endoftext|> = 50256 ends each document): from the user's vocab.json + merges.txt
    in `files_dir` with the `tokenizers` library when they are there, else from `tiktoken` (which downloads the
    vocabulary once and caches it)."""

    name = "gpt2"
    EOT = 50256

    def __init__(self, files_dir: Path) -> None:
        vocab, merges = files_dir / "vocab.json", files_dir / "merges.txt"
        self._encoding = self._backend = None
        if vocab.is_file() and merges.is_file():
            from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers

            self._backend = Backend(models.BPE.from_file(str(vocab), str(merges)))
            self._backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self._backend.decoder = decoders.ByteLevel()
            self.vocab_size = self._backend.get_vocab_size()
        else:
            try:
                import tiktoken
            except ImportError as err:
                raise FileNotFoundError(
                    f"data.tokenizer=gpt2 needs GPT-2's vocab.json and merges.txt in {files_dir} (under "
                    "data.cache_dir), or `tiktoken` (pip install tiktoken)"
                ) from err
            self._encoding = tiktoken.get_encoding("gpt2")
            self.vocab_size = self._encoding.n_vocab
        self.separator = [self.EOT]

    def encode(self, text: str) -> np.ndarray:
        ids = self._encoding.encode_ordinary(text) if self._encoding else self._backend.encode(text).ids
        return np.asarray(ids, dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        return self._encoding.decode(ids) if self._encoding else self._backend.decode(ids)

    def save(self, directory: Path) -> None:
        """Nothing to save: GPT-2's vocabulary is fixed and lives with tiktoken or the user's files."""


def check_tokenizer(name: str) -> None:
    if name not in TOKENIZERS:
        raise ValueError(f"data.tokenizer={name!r} is unknown: use one of {', '.join(TOKENIZERS)}")


def train_tokenizer(name: str, text: str, vocab_size: int, gpt2_files: Path) -> Tokenizer:
    """A tokenizer for `name`, learning its vocabulary from `text` when it has one to learn."""
    check_tokenizer(name)
    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        return CharTokenizer.train(text)
    if name == "bpe":
        return BPETokenizer.train(text, vocab_size)
    return GPT2Tokenizer(gpt2_files)


def load_tokenizer(name: str, directory: Path, gpt2_files: Path) -> Tokenizer:
    """The tokenizer saved in `directory` by `train_tokenizer(...).save(directory)`."""
    check_tokenizer(name)
    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        return CharTokenizer.load(directory)
    if name == "bpe":
        return BPETokenizer.load(directory)
    return GPT2Tokenizer(gpt2_files)
