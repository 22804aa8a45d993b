"""`python -m analysis` on bad CSVs and bad flags, table-driven: each is refused with one `error:` line that names the
flag (or file) and the fix, exit status 2, no traceback and nothing written; rows it cannot use are dropped with a
note that counts them and says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.io.synthetic import HOFFMANN
from clear_errors import assert_one_clear_line

FIT = ["fit-frontier", "--csv", "{csv}", "--flops-col", "flops", "--loss-col", "loss", "--replicates", "20"]
ISO = ["isoflop", "--csv", "{csv}", "--params-col", "params", "--flops-col", "flops", "--loss-col", "loss"]
PAR = ["fit-parametric", "--csv", "{csv}", "--params-col", "params", "--flops-col", "flops", "--loss-col", "loss"]

# (command line, which CSV ({csv}: a good one), what the line must name, the fix it must give)
CASES = [
    ([*FIT, "--replicates", "0"], "good", "--replicates: 0 is out of range", "an integer from 1 to 1000000"),
    ([*FIT, "--replicates", "abc"], "good", "--replicates: 'abc' is not", "an integer from 1"),
    ([*FIT, "--level", "2"], "good", "--level: 2 is out of range", "a number between 0 and 1"),
    ([*FIT, "--level", "nan"], "good", "--level: nan is out of range", "a number between 0 and 1"),
    ([*FIT, "--seed", "-1"], "good", "--seed: -1 is out of range", "an integer from 0"),
    ([*FIT, "--loss-noise", "-1"], "good", "--loss-noise: -1 is out of range", "a positive finite number"),
    ([*FIT, "--loss-noise", "inf"], "good", "--loss-noise: inf is out of range", "a positive finite number"),
    ([*PAR, "--at-flops", "nan"], "good", "--at-flops: nan is out of range", "a positive finite number"),
    ([*PAR, "--at-flops", "-1e20"], "good", "--at-flops: -1e20 is out of range", "a positive finite number"),
    ([*FIT, "--loss-noise", "-inf"], "good", "--loss-noise: -inf is out of range", "a positive finite number"),
    (["report", "--results", "r", "--out", "o", "--workers", "0"], "good", "--workers: 0 is out of range",
     "an integer from 1"),
    (["report", "--results", "r", "--out", "o", "--workers", "-3"], "good", "--workers: -3 is out of range",
     "an integer from 1"),
    (["report", "--results", "r", "--out", "o", "--max-interval-factor", "0.5"], "good",
     "--max-interval-factor: 0.5 is out of range", "a number >= 1"),
    (["plan-next", "--sweep", "s", "--budgets", "1e15", "--workers", "0"], "good", "--workers: 0", "an integer from 1"),
    (["plan-next", "--sweep", "s", "--budgets", "0"], "good", "--budgets 0: every budget must be a positive number",
     "of training FLOPs, e.g. --budgets 1e15 3e15"),
    (["plan-next", "--sweep", "s", "--budgets", "1e15", "--sizes", "0"], "good", "--sizes: 0", "an integer from 1"),
    (["coverage", "--out", "o", "--sweeps", "0"], "good", "--sweeps: 0 is out of range", "an integer from 1"),
    (["fit-frontier", "--csv", "{csv}", "--flops-col", "flops"], "good", "the following arguments are required",
     "see python -m analysis fit-frontier --help"),
    (["fit-everything"], "good", "invalid choice: 'fit-everything'", "see python -m analysis --help"),
    (FIT, "missing", "--csv", "no such file"),
    (FIT, "binary", "--csv", "not a readable CSV"),
    (FIT, "empty", "--csv", "not a readable CSV"),
    (FIT, "header", "--csv", "has a header but no rows"),
    ([*FIT[:-6], "--flops-col", "FLOPS", "--loss-col", "loss"], "good", "--flops-col 'FLOPS': no such column",
     "the table has"),
    ([*FIT[:-2], "--group-col", "structure"], "good", "--group-col 'structure': no such column", "the table has"),
    (FIT, "words", "--loss-col", "holds no numbers"),
    (FIT, "all_bad", "no row is usable", "fix the table"),
    (FIT, "huge", "beyond 1e+60", "fix or drop the row"),
    # issue 23, a second fresh table (a probe of new inputs)
    (FIT, "utf16", "--csv", "not a readable CSV"),
    (FIT, "spaces", "--csv", "not a readable CSV"),
    (FIT, "semicolons", "--flops-col 'flops': no such column", "the table has ['params;flops;loss']"),
    (FIT, "infloss", "no row is usable (25 with loss (--loss-col) not a positive number)", "fix the table"),
    (FIT, "adir", "--csv", "a folder, not a CSV file; give the path of a CSV file"),
    ([*FIT[:2], "/dev/null", *FIT[3:]], "good", "--csv /dev/null: not a regular file", "give the path of a CSV file"),
    ([*FIT, "--replicates", "1000000000"], "good", "--replicates: 1000000000 is out of range", "an integer from 1"),
    ([*FIT, "--replicates", "1.5"], "good", "--replicates: '1.5' is not", "an integer from 1 to 1000000"),
    ([*FIT, "--level", "1"], "good", "--level: 1 is out of range", "a number between 0 and 1"),
    ([*FIT, "--seed", "abc"], "good", "--seed: 'abc' is not", "an integer from 0 to 4294967295"),
    ([*FIT, "--run-col", "nope"], "good", "--run-col 'nope': no such column", "the table has"),
    ([*FIT, "--bogus"], "good", "unrecognized arguments: --bogus", "see python -m analysis --help"),
    ([*ISO, "--budgets", "abc"], "good", "--budgets: 'abc' is not", "a positive finite number"),
    ([*ISO, "--budgets", "-1"], "good", "--budgets: -1 is out of range", "a positive finite number"),
    ([*ISO, "--budgets", "nan"], "good", "--budgets: nan is out of range", "a positive finite number"),
    ([*ISO, "--seed-col", "nope"], "good", "--seed-col 'nope': no such column", "the table has"),
    ([*ISO, "--tokens-col", "params"], "good", "--tokens-col: not allowed with argument --flops-col", "see python"),
    ([*PAR, "--at-flops", "abc"], "good", "--at-flops: 'abc' is not", "a positive finite number"),
    ([*PAR, "--budgets", "-1"], "good", "--budgets: -1 is out of range", "a positive finite number"),
    (["report", "--results", "r", "--out", "o", "--wandb-mode", "bogus"], "good", "--wandb-mode: invalid choice",
     "choose from"),
    (["report", "--results", "r", "--out", "o", "--max-interval-factor", "inf"], "good",
     "--max-interval-factor: inf is out of range", "a number >= 1"),
    (["report", "--results", "r"], "good", "the following arguments are required: --out", "see python -m analysis"),
    (["report", "--results", "", "--out", "o"], "good", "--results '' is empty", "set --results DIR"),
    (["report", "--results", "{csv}", "--out", "o"], "good", "is a file, not a folder", "set --results DIR to a"),
    (["plan-next", "--sweep", "s", "--budgets", "abc"], "good", "--budgets: invalid float value: 'abc'",
     "see python -m analysis plan-next --help"),
    (["plan-next", "--sweep", "s", "--budgets", "inf"], "good", "--budgets inf: every budget must be a positive",
     "e.g. --budgets 1e15 3e15"),
    (["plan-next", "--sweep", "some/dir/s.yaml", "--budgets", "1e15"], "good", "--sweep some/dir/s.yaml: give the "
     "sweep's name, not a path", "--sweep s --sweep-dir some/dir"),
    (["coverage", "--out", "o", "--cells", "abc"], "good", "--cells: 'abc' is not DECADESxSEEDS", "e.g. 1.5x3"),
    (["coverage", "--out", "o", "--cells", "0x0"], "good", "--cells: '0x0' is not DECADESxSEEDS", "e.g. 1.5x3"),
    (["coverage", "--out", "{csv}", "--cells", "0.3x1"], "good", "--out", "is a file, not a folder"),
    (["docs-tables", "{csv}"], "binary", "not UTF-8 text", "name Markdown files with results-table markers"),
    (["docs-tables", "nofile.md"], "good", "nofile.md: no such file", "name Markdown files"),
    # issue 23, probe 2
    ([*FIT[:-2], "--group-col", "structure"], "nogroup", "--group-col 'structure': the column is empty in every row",
     "fill it in (one fit per value), or leave out --group-col for one fit"),
    ([*ISO, "--group-col", "structure"], "nogroup", "--group-col 'structure': the column is empty", "leave out"),
    ([*PAR, "--group-col", "structure"], "nogroup", "--group-col 'structure': the column is empty", "leave out"),
    (["report", "--results", "r", "--out", "o", "--workers", "100000"], "good", "--workers: 100000 is out of range",
     "(4x this machine's cores)"),
    (["plan-next", "--sweep", "s", "--budgets", "1e15", "--workers", "100000"], "good",
     "--workers: 100000 is out of range", "(4x this machine's cores)"),
    (["docs-tables", "no_report.md"], "good", "no_report.md, line 3: <!-- results-table: nope --> names the report "
     "folder nope, which does not exist", "fix the marker's path"),
    (["docs-tables", "unclosed.md"], "good", "unclosed.md, line 1: <!-- results-table: reports --> is not closed",
     "end its table with <!-- /results-table -->"),
    ([*FIT[:5], "--loss-col", "flops"], "good", "--loss-col and --flops-col name the same column 'flops'",
     "give each its own column"),
    ([*PAR[:4], "loss", *PAR[5:]], "good", "--loss-col and --params-col name the same column 'loss'",
     "give each its own column"),
    (["coverage", "--out", "o", "--cells", "-1x3"], "good", "--cells: '-1x3' is not DECADESxSEEDS",
     "give decades in (0, 10] and seeds from 1 to 1000, e.g. 1.5x3"),
    (["coverage", "--out", "o", "--cells", "0.3x1", "-0.5x2"], "good", "--cells: '-0.5x2' is not", "e.g. 1.5x3"),
    (["plan-next", "--sweep", "", "--budgets", "1e15"], "good", "--sweep: '' is empty",
     "give a sweep's name, e.g. quickstart"),
    (["report", "--results", "r", "--out", "o", "--sweep", " "], "good", "--sweep: ' ' is empty", "a sweep's name"),
]


def _table(kind: str) -> pd.DataFrame:
    rows = [{"params": float(HOFFMANN.n_opt(c) * f), "flops": c} for c in np.geomspace(6e18, 3e21, 5)
            for f in np.geomspace(1 / 6, 6, 5)]
    df = pd.DataFrame(rows)
    df["loss"] = [HOFFMANN.loss(n, c / (6 * n)) for n, c in zip(df.params, df.flops)]
    if kind == "words":
        df["loss"] = "low"
    elif kind == "all_bad":
        df["loss"] = [np.nan, -1.0, 0.0, None, "x"] * 5
    elif kind == "huge":
        df.loc[3, "loss"] = 1e300
    elif kind == "infloss":
        df["loss"] = np.inf
    elif kind == "nogroup":
        df["structure"] = np.nan
    return df


@pytest.fixture
def csvs(tmp_path):
    paths = {kind: tmp_path / f"{kind}.csv" for kind in ("good", "words", "all_bad", "huge", "nogroup")}
    for kind, path in paths.items():
        _table(kind).to_csv(path, index=False)
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("params,flops,loss\n")
    (tmp_path / "utf16.csv").write_bytes(_table("good").to_csv(index=False).encode("utf-16"))
    (tmp_path / "spaces.csv").write_text("   \n  \n")
    (tmp_path / "semicolons.csv").write_text(_table("good")[["params", "flops", "loss"]].to_csv(index=False, sep=";"))
    _table("infloss").to_csv(tmp_path / "infloss.csv", index=False)
    (tmp_path / "adir.csv").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "no_report.md").write_text("# Results\n\n<!-- results-table: nope -->\n| old |\n"
                                           "<!-- /results-table -->\n")
    (tmp_path / "unclosed.md").write_text("<!-- results-table: reports -->\n| old |\n")
    return tmp_path


@pytest.mark.parametrize("argv, csv, field, fix", CASES, ids=[f"{' '.join(a[:1] + a[3:])}:{c}" for a, c, *_ in CASES])
def test_bad_csv_or_flag_is_one_clear_line(argv, csv, field, fix, csvs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{csv}", str(csvs / f"{csv}.csv")) for a in argv]
    code = main(args)  # argparse's usage errors too are returned, not raised
    assert_one_clear_line(code, capsys.readouterr(), field, fix)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_unusable_rows_are_dropped_with_a_note_that_counts_them(csvs, tmp_path, capsys):
    df = _table("good").astype({"loss": object})  # an empty string is no float: the column holds text too
    df.loc[0, "loss"], df.loc[1, "loss"], df.loc[2, "loss"], df.loc[3, "flops"] = np.nan, -2.0, "", 0.0
    path = tmp_path / "holes.csv"
    df.to_csv(path, index=False)
    assert main([a.replace("{csv}", str(path)) for a in FIT]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == ("note: dropped 4 of 25 rows: 2 with loss (--loss-col) empty or not a number; 1 "
                                    "with loss (--loss-col) not a positive number; 1 with flops (--flops-col) not a "
                                    "positive number")
    assert "L(C) = E + A C^-alpha" in captured.out
