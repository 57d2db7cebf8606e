"""The bench scripts' ``--json OUT`` (bench/_common.py): every script takes it, and one cheap run writes the
figures it printed, their ratios to the baseline of the same run, the machine and the provenance."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as for a script run from bench/
    import _common

    return _common


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_every_bench_script_takes_json(script):
    text = script.read_text()
    assert "add_json_option(parser)" in text and ".write(" in text, f"{script.name} has no --json OUT"


def test_a_bench_run_writes_its_figures_ratios_and_provenance(tmp_path):
    out = tmp_path / "not" / "yet" / "relabel.json"  # its folder is made
    command = [sys.executable, "bench/relabel.py", "--episodes", "16", "--length", "20", "--image-episodes", "8",
               "--image-size", "8", "--repeats", "1", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert (record["schema"], record["schema_version"], record["bench"]) == ("cfgrl.bench", 1, "relabel")
    assert record["args"]["episodes"] == 16 and record["about"].startswith("Relabelling benchmark")
    figures = {f["name"]: f for f in record["figures"]}
    plain, images = figures["relabel without images: best"], figures["relabel with images: best"]
    assert images["unit"] == plain["unit"] == "s"
    assert images["ratios"] == {"relabel without images: best": pytest.approx(images["value"] / plain["value"])}
    ratio = figures["relabel time ratio images / no images (best of 1)"]
    assert ratio["headline"] and ratio["target"] == "<= 1.10"
    assert f"(best of 1): {ratio['value']:.3f} (target <= 1.10)" in done.stdout  # the number it printed, unrounded in the file
    assert record["provenance"]["command"].startswith("relabel.py --episodes 16")
    assert set(record["provenance"]) == {"cfgrl_version", "git_commit", "git_dirty", "command", "utc"}
    assert record["machine"]["cpus"] >= 1 and "load_average_before" in record["machine"]


def test_a_ratio_needs_a_baseline_of_the_same_run_and_unit(common, tmp_path):
    figures = common.Figures("bench/x.py", "X.")
    figures.add("a", 2.0, "s", vs="b")
    with pytest.raises(ValueError, match="'a' is a ratio to 'b', which this run did not record"):
        figures.figures()
    figures.add("b", 4.0, "ms")
    with pytest.raises(ValueError, match="cannot be a ratio"):
        figures.figures()
    with pytest.raises(ValueError, match="added twice"):
        figures.add("a", 1.0, "s")
    figures.write(None, argparse.Namespace())  # no --json: nothing written, nothing raised
    assert not list(tmp_path.iterdir())
