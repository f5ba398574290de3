"""bnncl summary."""

import json
import re

import pytest

from bnncl.cli import main


def test_summary_reports_at_least_10x_smaller(capsys, tmp_path):
    assert main(["summary", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"([\d.]+)x smaller", out).group(1))
    s = json.loads((tmp_path / "s.json").read_text())
    assert ratio == pytest.approx(s["totals"]["fp32_over_deployed"], abs=0.05)
    assert ratio >= 10
    assert s["totals"]["params_1bit"] > 0
