"""The docs' result tables are generated from the committed reports' fits.json: `docs-tables` writes them, and
`--check` fails as soon as a table and its report disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from analysis.cli import main

REPO = Path(__file__).resolve().parents[3]
MARKED = "intro\n<!-- results-table: results/quickstart -->\nstale text\n<!-- /results-table -->\nafter\n"


def _docs(tmp_path: Path) -> Path:
    (tmp_path / "results/quickstart").mkdir(parents=True)
    shutil.copy(REPO / "docs/results/quickstart/fits.json", tmp_path / "results/quickstart/fits.json")
    page = tmp_path / "page.md"
    page.write_text(MARKED)
    return page


def test_tables_are_written_from_fits_json_and_checked(tmp_path, capsys):
    page = _docs(tmp_path)
    assert main(["docs-tables", "--check", str(page)]) == 2
    assert "result tables differ from the committed reports' fits.json" in capsys.readouterr().err
    assert page.read_text() == MARKED  # --check changes nothing
    assert main(["docs-tables", str(page)]) == 0
    text = page.read_text()
    fits = json.loads((tmp_path / "results/quickstart/fits.json").read_text())
    btt = fits["experiments"][0]["pooled"]["labels"]["btt"]["multiplier"]
    row = f"| btt | 10 | {btt['value']:.3g} [{btt['lo']:.3g}, {btt['hi']:.3g}] | {btt['hi'] / btt['lo']:.3g} | ok |"
    assert row in text and text.startswith("intro\n") and text.endswith("<!-- /results-table -->\nafter\n")
    assert "stale text" not in text
    assert main(["docs-tables", "--check", str(page)]) == 0
    # a changed report makes the table stale
    btt["value"] = 0.5
    (tmp_path / "results/quickstart/fits.json").write_text(json.dumps(fits))
    assert main(["docs-tables", "--check", str(page)]) == 2


def test_a_marker_naming_no_report_is_one_line(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(MARKED)
    assert main(["docs-tables", str(page)]) == 2
    assert capsys.readouterr().err == (f"error: {page}, line 2: <!-- results-table: results/quickstart --> names the "
                                       f"report folder {tmp_path}/results/quickstart, which does not exist; fix the "
                                       "marker's path (relative to the file) or write that report with `python -m "
                                       "analysis report`\n")
    (tmp_path / "results/quickstart").mkdir(parents=True)  # the folder, but no report in it
    assert main(["docs-tables", str(page)]) == 2
    assert "results/quickstart/fits.json: cannot read the report's fits" in capsys.readouterr().err
    assert page.read_text() == MARKED


def test_the_committed_docs_tables_match_the_committed_reports():
    assert main(["docs-tables", "--check", str(REPO / "README.md"), str(REPO / "docs/results.md")]) == 0
