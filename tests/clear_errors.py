"""The bad-input tables' shared check: exit status 2 and one `error:` line that names the field and the fix."""

from __future__ import annotations


def assert_one_clear_line(code: int, captured, field: str, fix: str) -> None:
    """`captured` (pytest's capsys result) holds one `error:` line naming `field` and `fix`, no traceback and
    no standard output; the command returned 2."""
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and field in lines[0] and fix in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
