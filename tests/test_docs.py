"""The README and the documentation site: the site builds strictly, every generated page (the reference
from the code, the results from the committed artefacts, the README's results table) equals what its
generator gives now, the README stays a front door, and `python -m cfgrl` is the command line."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def script(name: str):
    """A generator from scripts/ (not a package), imported by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return script("docs_reference")


@pytest.fixture(scope="module")
def results():
    return script("docs_results")


def test_the_site_builds_strictly(tmp_path):
    """mkdocs --strict fails on a broken link or anchor, a page missing from the nav, or a nav entry without a page."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def test_the_reference_pages_are_what_the_code_gives(reference):
    assert reference.stale_pages() == [], "regenerate them: make docs"


def test_the_results_pages_and_the_readme_table_are_what_the_artefacts_give(results):
    assert results.stale_pages() == [], "regenerate them: make docs"


def test_every_command_option_and_key_is_in_the_reference(reference):
    import typer.main

    from cfgrl.cli import app
    from cfgrl.config import all_keys

    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="cfgrl")
    for name in group.list_commands(ctx):
        assert f"## cfgrl {name}\n" in cli, name
        for param in group.get_command(ctx, name).params:
            for opt in param.opts if param.param_type_name == "option" else []:
                assert opt in cli, f"{name} {opt}"
    config = (ROOT / "docs" / "reference" / "config.md").read_text()
    missing = [key for key in all_keys() if f"| `{key}` |" not in config]
    assert not missing, missing


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert lines[2].split("#")[0].strip() == "make collect label train eval"
    assert lines[3].split("#")[0].strip() == "make test"
    fenced, long = False, []
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith(("    ", "|")) and len(line) > 120:
            long.append(number)
    assert not long, f"README lines over 120 characters outside code and tables: {long}"
    for target in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / target).is_file(), target


def test_python_m_cfgrl_is_the_command_line():
    done = subprocess.run([sys.executable, "-m", "cfgrl", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "collect" in done.stdout and "evaluate" in done.stdout


def test_a_results_page_reads_every_number_from_its_artefacts(results, tmp_path):
    """Each artefact kind renders, with its numbers and its provenance, and nothing else."""
    from cfgrl.provenance import record

    prov = record()
    assert set(prov) == {"cfgrl_version", "git_commit", "git_dirty", "command", "utc"}

    def row(split, arm, role, w, rate, scope="overall", prompt="", diff=None):
        return {"split": split, "arm": arm, "role": role, "cfg_scale": w, "scope": scope, "suite": "reach", "task_id": None,
                "prompt": prompt, "episodes": 200, "successes": int(rate * 200), "success_rate": rate, "ci_low": rate - 0.05,
                "ci_high": rate + 0.05, "diff_vs_w1": diff, "diff_ci_low": None if diff is None else diff - 0.06,
                "diff_ci_high": None if diff is None else diff + 0.06}

    run = tmp_path / "exp"
    (run / "eval").mkdir(parents=True)
    rows = [row("test", "w=1", "policy", 1.0, 0.41), row("test", "w=2", "policy", 2.0, 0.53, diff=0.12),
            row("test", "baseline", "baseline", 0.0, 0.28, diff=-0.13), row("validation", "w=1", "policy", 1.0, 0.44),
            row("validation", "w=2", "policy", 2.0, 0.56), row("test", "w=2", "policy", 2.0, 0.75, "task", "grasp the top left ball")]
    (run / "eval" / "results.json").write_text(json.dumps({"rows": rows, "chosen_cfg_scale": 2.0, "provenance": prov}))
    (run / "ablation.csv").write_text("setting,factor,value,chosen_cfg_scale,success,ci_low,ci_high,success_w1,diff_vs_default,"
                                      "diff_ci_low,diff_ci_high,label_version,policy\n"
                                      "default,default,,2.0,0.625,0.556,0.689,0.54,,,,v,p\n"
                                      "cfgrl.label_scheme=ternary,cfgrl.label_scheme,ternary,3.0,0.435,0.368,0.504,0.34,-0.19,-0.267,-0.109,v,p\n")
    spread = {"seeds": [0, 1], "per_seed": {"0": {"base": 0.285, "cfgrl": 0.625, "cfgrl_w": 2.0, "cfgrl_minus": {"filtered_bc": [0.04, -0.04, 0.12]}},
                                           "1": {"base": 0.285, "cfgrl": 0.665, "cfgrl_w": 3.0, "cfgrl_minus": {"filtered_bc": [0.1, 0.016, 0.181]}}},
              "summary": {"base": {"mean": 0.285, "std": 0.0, "min": 0.285, "max": 0.285},
                          "cfgrl": {"mean": 0.645, "std": 0.028, "min": 0.625, "max": 0.665}}}
    (run / "spread").mkdir()
    (run / "spread" / "report.json").write_text(json.dumps(spread))
    text = "\n".join(results.sections(run, tmp_path))
    for number in ("**53.0% (48.0–58.0)**", "+12.0 (+6.0, +18.0)", "56.0%", "28.0% (23.0–33.0)", "75.0%",  # the evaluation
                   "43.5% (36.8–50.4)", "-19.0 (-26.7, -10.9)",  # the ablation
                   "64.5% ± 2.8", "+10.0 (+1.6, +18.1)",  # the spread
                   prov["utc"], "Provenance: not recorded"):  # the ablation has no provenance.json here
        assert number in text, number
    assert "![success against w]" not in text  # no figure without its file
    assert results.spread_headline(spread) == "over seeds 0, 1, each arm at its validation-chosen w: cfgrl 64.5% ± 2.8 (base 28.5%)"


def test_the_demonstration_and_a_round_render_from_their_records(results, tmp_path):
    """The shapes `cfgrl demo` (report.json) and `cfgrl round` (round.json) write."""
    round_1 = {"round": 1, "collect_cfg_scale": 1.0, "chosen_cfg_scale": 2.0, "chosen_on": "validation",
               "overall_success": {"w=1": 0.54, "w=2": 0.625, "baseline": 0.285}, "policy_in_id": "aaa", "policy_out_id": "bbb"}
    fbc = [{"arm": "w=1", "cfg_scale": 1.0, "episodes": 200, "success_rate": 0.585, "ci_low": 0.516, "ci_high": 0.651, "chosen": True}]
    report = {"schema": "cfgrl.demo_report", "schema_version": 1, "env": "the built-in environment (reach)",
              "round_1": round_1, "round_2": None, "baselines": {"filtered_bc": fbc},
              "baselines_chosen_cfg_scale": {"filtered_bc": 1.0}, "cfgrl_minus_baselines": {"filtered_bc": [0.04, -0.04, 0.12]},
              "rounds_minus_base": {"round_1": [0.34, 0.27, 0.41]}, "timings_s": {"round 1 (collect, label, train, evaluate)": 1478.2}}
    (tmp_path / "demo" / "rounds" / "round_001").mkdir(parents=True)
    (tmp_path / "demo" / "report.json").write_text(json.dumps(report))
    (tmp_path / "demo" / "rounds" / "round_001" / "round.json").write_text(json.dumps(round_1))
    text = "\n".join(results.sections(tmp_path / "demo", tmp_path))
    for number in ("w=2 62.5%", "58.5% (51.6–65.1)", "+4.0 (-4.0, +12.0)", "round 1 +34.0 (+27.0, +41.0)", "| 1478 |",
                   "### Round 1 (demo/rounds/round_001)", "`bbb`"):
        assert number in text, number


def test_the_study_gathers_every_arm_chooses_w_by_evaluates_rule_and_renders(results, tmp_path):
    """scripts/metaworld_study.py's study.json from the arms' curve.csv files, and its section of a page."""
    study = script("metaworld_study")
    columns = "step,cfg_scale,episodes,successes,success_rate,ci_low,ci_high,checkpoint"
    curves = {  # cfgrl ties at w = 1 and 1.5 on success: the higher lower bound (1.5) wins, then the smaller w
        "cfgrl": ["4000,1.0,100,30,0.30,0.22,0.40,c", "8000,1.0,100,40,0.40,0.31,0.50,c"],
        "cfgrl/other_w": ["8000,0.0,100,10,0.10,0.05,0.17,c", "8000,1.5,100,40,0.40,0.32,0.50,c", "8000,2.0,100,40,0.40,0.32,0.50,c"],
        "filtered_bc": ["4000,1.0,100,45,0.45,0.35,0.55,c", "8000,1.0,100,55,0.55,0.45,0.64,c"],
        "base": ["1500,1.0,100,25,0.25,0.18,0.34,c"],
        "base_small": ["1500,1.0,100,30,0.30,0.22,0.40,c"],  # a capacity arm's base: a level, not an arm
    }
    for arm, rows in curves.items():
        (tmp_path / "curves" / arm).mkdir(parents=True)
        (tmp_path / "curves" / arm / "curve.csv").write_text("\n".join([columns, *rows]) + "\n")
    gathered = study.gather(tmp_path)
    assert {name: arm["chosen_w"] for name, arm in gathered["arms"].items()} == {"base": 1.0, "base_small": 1.0, "cfgrl": 1.5, "filtered_bc": 1.0}
    assert [name for name, arm in gathered["arms"].items() if arm["role"] == "base"] == ["base", "base_small"]
    assert "weighted" in gathered["not_run"] and (tmp_path / "study.png").is_file()
    assert json.loads((tmp_path / "study.json").read_text())["schema"] == "cfgrl.study"
    text = "\n".join(results.sections(tmp_path, tmp_path))
    for number in ("| cfgrl | the demonstration's recipe before the study: failed episodes in ∅ | 30.0% (22.0–40.0) | 40.0% (31.0–50.0) |",
                   "| filtered_bc | o = 1 windows alone, no condition | 45.0% (35.0–55.0) | 55.0% (45.0–64.0) |",
                   "| filtered_bc |  | 55.0% (45.0–64.0) |  |  | 1 |", "10.0% (5.0–17.0)", "| 1.5 |", "Not run yet: weighted",
                   "- base, the behaviour-cloned `tiny` base its arms start from (its last checkpoint; it has no condition), "
                   "step 1500 of its behaviour cloning: 25.0% (18.0–34.0)", "- base_small, the behaviour-cloned `small` base"):
        assert number in text, number
    assert "validation only, nothing on test yet: cfgrl 40.0% (w = 1.5), filtered_bc 55.0% (w = 1)" == results.study_headline(gathered, [])
    # Each arm reported on test keeps its own report: a later choice (another size) does not replace an earlier one.
    for chosen, rate in (("cfgrl", 0.5), ("cfgrl_small", 0.6)):
        arms = {chosen: {"w": 1.5, "success_rate": rate, "ci_low": 0.4, "ci_high": 0.7},
                "filtered_bc": {"w": 1.0, "success_rate": 0.45, "ci_low": 0.35, "ci_high": 0.55, f"{chosen}_minus_it": [0.05, 0.01, 0.09]}}
        study.test_report(tmp_path, chosen).write_text(json.dumps({"chosen": chosen, "arms": arms}))
    headline = results.study_headline(gathered, [report for _, report in results.study_tests(tmp_path)])
    assert headline.startswith("cfgrl at w = 1.5 (chosen on validation): 50.0% on test") and "cfgrl_small at w = 1.5" in headline
    text = "\n".join(results.sections(tmp_path, tmp_path))
    assert "### cfgrl, chosen on validation, once on test" in text and "### cfgrl_small, chosen" in text and "| cfgrl_small | 1.5 | 60.0% (40.0–70.0) |" in text


def test_the_benchmarks_page_reads_each_bench_json(results, tmp_path, monkeypatch):
    """A bench's --json file, as bench/_common.py writes it, renders with its figures, ratios, command and machine;
    the benches with no file committed are listed as having none."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from _common import Figures

    exp = next(e for e in results.experiments() if e["slug"] == "benchmarks")
    figures = Figures("bench/relabel.py", "Relabelling benchmark: relabel time with images against without.")
    figures.add("relabel without images: best", 0.25, "s")
    figures.add("relabel with images: best", 0.2625, "s", vs="relabel without images: best")
    figures.add("relabel time ratio images / no images (best of 9)", 1.05, "x", target="<= 1.10", headline=True)
    figures.write(tmp_path / "benchmarks" / "relabel.json", argparse.Namespace(episodes=50000, json=None))
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    text = results.page(exp)
    record = json.loads((tmp_path / "benchmarks" / "relabel.json").read_text())
    for expected in ("### `bench/relabel.py`", "Relabelling benchmark: relabel time",
                     "| relabel with images: best | 0.2625 s | 1.05× relabel without images: best |  |",
                     "| **relabel time ratio images / no images (best of 9)** | 1.05x |  | <= 1.10 |",
                     f"{record['provenance']['utc']}; command `{record['provenance']['command']}`",
                     f"Machine: cpu {record['machine']['cpu']}, cpus {record['machine']['cpus']}"):
        assert expected in text, expected
    missing = text.split('!!! note "No artefact yet"')[1]
    assert "`bench/train_input.py`" in missing and "`bench/relabel.py`" not in missing and "../log.md#" in missing
    assert results.headline(exp) == ("relabel time ratio images / no images (best of 9) 1.05x", True)


def test_a_label_version_shows_its_provenance_where_its_manifest_has_one(results, tmp_path):
    from cfgrl.provenance import record

    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "summary.txt").write_text("label index abc\n")
    manifest = {"version": "abc", "settings": {"label_source": "episode_rloo"}, "created_utc": "2026-12-07T00:00:00Z"}
    (tmp_path / "labels" / "manifest.json").write_text(json.dumps(manifest))
    assert "(the label index records no command)" in "\n".join(results.sections(tmp_path, tmp_path))
    prov = record()
    (tmp_path / "labels" / "manifest.json").write_text(json.dumps({**manifest, "provenance": prov}))
    text = "\n".join(results.sections(tmp_path, tmp_path))
    assert f"commit `{prov['git_commit']}`" in text and f"command `{prov['command']}`" in text and "records no command" not in text
