"""`python -m scaling.coordcheck`: one coordinate check (scaling.mup.coordcheck), written as CSV and a plot."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from scaling.mup.coordcheck import fit_slopes, parse_args, plot, run_coordcheck
from scaling.process import log_to_console


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the check, write coord.csv / slopes.csv / coord.png to coordcheck.out, print the slopes; return them."""
    log_to_console()
    cc, cfg = parse_args(sys.argv[1:] if argv is None else argv)
    df = run_coordcheck(cc, cfg)
    slopes = fit_slopes(df)
    out = Path(cc.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "coord.csv", index=False)
    slopes.to_csv(out / "slopes.csv", index=False)
    title = (f"{cfg.model.family} / {cfg.structure.name} / {cfg.model.parametrization}: lr {cfg.train.lr:g}, "
             f"{cc.seeds} seed(s), base width {cfg.model.base_width}")
    plot(df, slopes, title, out / "coord.png")
    print(title)
    print(slopes.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"wrote {out / 'coord.csv'}, {out / 'slopes.csv'}, {out / 'coord.png'}")
    return slopes

