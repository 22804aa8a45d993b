"""Result tables in the docs, regenerated from the committed reports, so no number in them is copied by hand.

A Markdown file marks a generated table with a pair of comments naming a report directory (relative to the file):

    <!-- results-table: results/quickstart -->
    ...the table, rewritten from results/quickstart/fits.json...
    <!-- /results-table -->

`python -m analysis docs-tables` rewrites every marked table under the given files; `--check` changes nothing and
fails when a table differs from what the committed fits.json gives (CI runs it through tests/test_docs.py).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from analysis.errors import AnalysisError

BLOCK = re.compile(r"(<!-- results-table: (?P<report>[^ ]+) -->\n)(?P<body>.*?)(<!-- /results-table -->)", re.S)
MARKER = re.compile(r"<!-- (?:(?P<close>/)results-table|results-table: (?P<report>[^ ]+)) -->")
MODELS = {"shared": "multiplier", "per-label": "multiplier_per_label"}


def _num(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _interval(iv: dict) -> str:
    return f"{_num(iv['value'])} [{_num(iv['lo'])}, {_num(iv['hi'])}]"


def _span(iv: dict) -> str:
    lo, hi = iv["lo"], iv["hi"]
    return _num(hi / lo) if lo is not None and hi is not None and lo > 0 else "–"


def experiment_table(exp: dict, metric: str = "val_loss") -> list[str]:
    """One experiment's pooled multipliers per label (the model the data support), their status and runs; the loss
    read and the fixed-epoch protocol are named when they are not the defaults."""
    pooled = exp.get("pooled")
    name = f"`{exp['sweep']}` {exp['experiment']}"
    how = (["final training loss"] if metric == "train_loss" else []) + \
        (["fixed epochs: shift between the loss-vs-FLOPs curves"] if exp.get("protocol") == "fixed_epochs" else [])
    name += f" ({', '.join(how)})" if how else ""
    if not pooled:
        return [f"{name}: no pooled fit ({'; '.join(exp.get('notes', [])) or 'fewer than 2 labels'})", ""]
    model, key = pooled["model"], MODELS[pooled["model"]]
    dropped = max(pooled["failed_replicates"].values(), default=0)
    head = (f"{name}, at C = {pooled['reference_flops']:.3g} FLOPs, {model} model (p = {pooled['p_value']:.2g} for "
            f"per-label exponents), shared alpha = {_interval(pooled['alpha'])}, {pooled['rows']} reads; "
            f"{dropped} of {pooled['replicates']} bootstrap replicates dropped:")
    rows = ["| label | runs | compute multiplier vs " + pooled["reference"] + " [95%] | hi/lo | status |",
            "|---|---|---|---|---|"]
    for label, fit in pooled["labels"].items():
        iv = fit[key]
        status = "reference" if label == pooled["reference"] else \
            exp["labels"][label]["status"].get("pooled", {}).get("status", "–")
        rows.append(f"| {label} | {fit['runs']} | {_interval(iv)} | {_span(iv)} | {status} |")
    return [head, "", *rows, ""]


def report_tables(report_dir: Path) -> str:
    """The generated Markdown for the report in `report_dir` (its fits.json), one table per experiment."""
    path = report_dir / "fits.json"
    try:
        fits = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AnalysisError(f"{path}: cannot read the report's fits ({err}); regenerate the report with "
                            "`python -m analysis report` or fix the marker's path", "docs") from None
    metric = fits.get("metric", "val_loss")
    lines = [line for exp in fits["experiments"] for line in experiment_table(exp, metric)]
    return "\n".join(lines) + "\n"


def check_markers(path: Path, text: str) -> None:
    """Each marker of the file `path` names a report folder that exists and is closed before the next one opens."""
    markers = list(MARKER.finditer(text))
    for m, after in zip(markers, [*markers[1:], None]):
        if m["close"]:
            continue
        where = f"{path}, line {text.count(chr(10), 0, m.start()) + 1}: {m[0]}"
        folder = path.parent / m["report"]
        if not folder.is_dir():
            raise AnalysisError(f"{where} names the report folder {folder}, which does not exist; fix the marker's "
                                "path (relative to the file) or write that report with `python -m analysis report`")
        if after is None or not after["close"]:
            raise AnalysisError(f"{where} is not closed; end its table with <!-- /results-table -->")


def regenerate(text: str, base: Path) -> str:
    """`text` with every marked table rewritten from the report its marker names (relative to `base`)."""
    return BLOCK.sub(lambda m: m.group(1) + report_tables(base / m.group("report")) + m.group(4), text)


def update(files: list[Path], check: bool) -> list[Path]:
    """Rewrite the marked tables of `files` (with `check`, only compare); the files whose tables differ(ed)."""
    texts = {path: path.read_text() for path in files}
    for path, text in texts.items():
        check_markers(path, text)
    new = {path: regenerate(text, path.parent) for path, text in texts.items()}  # every file's before any is written
    stale = [path for path in files if new[path] != texts[path]]
    if not check:
        for path in stale:
            path.write_text(new[path])
    return stale
