"""`cfgrl inspect POLICY` on each layout read: family, sizes, chunk, state input, stats kind, condition."""

from __future__ import annotations

from typer.testing import CliRunner

from cfgrl.cli import app
from policy_helpers import make_policy
from test_lerobot_fixture import FIXTURE
from test_lerobot_pi05_fixture import FIXTURE as PI05_FIXTURE
from test_openpi_layout import norm_stats, openpi_dir


def inspect(path) -> dict[str, str]:
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"policy {path}"
    return {line.split("  ")[1].strip(): line.split("  ", 2)[2].strip() for line in lines[1:]}


def test_inspect_names_what_each_layout_holds(tmp_path):
    policy = make_policy(condition_mode="bias", chunk_size=10)
    policy.condition_trained = True
    rows = inspect(policy.save_pretrained(tmp_path / "ours"))
    assert rows["layout"] == "cfgrl" and rows["family"] == "π0" and rows["chunk"] == "10 actions"
    assert rows["stats"] == "mean_std" and rows["state input"].startswith("a state token")
    assert rows["condition"].startswith("bias mode, prefix dropout off; trained: yes")
    assert "preset tiny" in rows["sizes"]
    blind = make_policy(family="pi05", discrete_state_input=False, chunk_size=10).save_pretrained(tmp_path / "blind")
    rows = inspect(blind)
    assert rows["family"] == "π0.5" and rows["state input"].startswith("none (the model does not see the state)")

    rows = inspect(FIXTURE)
    assert rows["layout"] == "lerobot" and rows["family"] == "π0" and rows["chunk"] == "50 actions"
    assert rows["stats"] == "mean_std" and "never trained" in rows["condition"]
    assert rows["state input"].startswith("a state token")

    rows = inspect(PI05_FIXTURE)
    assert rows["layout"] == "lerobot" and rows["family"] == "π0.5" and rows["chunk"] == "50 actions"
    assert rows["state input"] == "in the prompt as 256-bin text"

    rows = inspect(openpi_dir(tmp_path, name="openpi05", family="pi05", stats=norm_stats(quantiles=True), horizon=10))
    assert rows["layout"] == "openpi" and rows["family"] == "π0.5" and rows["chunk"] == "10 actions"
    assert rows["stats"].startswith("quantile (assets/physical-intelligence/libero/norm_stats.json)")
    assert "discrete_state_input" in rows["state input"]
