"""Issue 13's last items: the train.py docstring example, `analysis report --out` at a file, absurd CSV values."""

from __future__ import annotations

from analysis.cli import main as analysis_main
from scaling.config.compose import compose_run_config
from scaling.train.plan import plan_run
from scaling.store.results import run_id


def test_the_docstring_example_with_tokens_in_exponent_form_works():
    cfg = compose_run_config(["model=gpt2", "structure=btt", "model.width=256", "train.tokens=2e6"])
    assert cfg.train.tokens == 2_000_000 and isinstance(cfg.train.tokens, int)
    assert run_id(cfg) == run_id(compose_run_config(["model=gpt2", "structure=btt", "model.width=256",
                                                     "train.tokens=2000000"]))
    assert plan_run(cfg).units >= 2_000_000


def test_report_out_at_a_file_fails_before_any_analysis(tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text("not a directory")
    # --results does not exist either: the --out error comes first, so nothing was loaded or fitted
    code = analysis_main(["report", "--results", str(tmp_path / "absent"), "--out", str(out / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out / 'sub'} lies under {out}, which is a file, not a folder" in err


def test_an_absurd_value_in_a_csv_is_rejected_with_its_row(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss\n1e6,2e7,3.1\n2e6,4e7,2.9\n1e300,8e7,2.7\n4e6,8e7,2.7\n")
    code = analysis_main(["fit-parametric", "--csv", str(csv), "--params-col", "N", "--tokens-col", "D",
                          "--loss-col", "loss", "--replicates", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "--params-col 'N': row 3 holds 1e+300, beyond 1e+60" in err
