"""Configuration: precedence, validation, retired keys, and the CLI's one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfgrl.config import DEFAULT_YAML, Config, config_from_dict, load_config
from cfgrl.errors import CfgrlError


def write_yaml(tmp_path, tree):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_packaged_yaml_mirrors_dataclass_defaults():
    assert yaml.safe_load(DEFAULT_YAML.read_text()) == Config().to_dict()


def test_precedence_cli_over_env_over_yaml_over_defaults(tmp_path):
    path = write_yaml(tmp_path, {"inference": {"cfg_scale": 2.0}, "cfgrl": {"dropout_prob": 0.2}})
    assert load_config(environ={}).inference.cfg_scale == 1.0
    assert load_config(path, environ={}).inference.cfg_scale == 2.0
    assert load_config(path, environ={"PI0_CFG_SCALE": "3.5"}).inference.cfg_scale == 3.5
    cfg = load_config(path, ["inference.cfg_scale=1.5"], environ={"PI0_CFG_SCALE": "3.5"})
    assert cfg.inference.cfg_scale == 1.5
    assert cfg.cfgrl.dropout_prob == 0.2


def test_integer_lists_take_inclusive_ranges(tmp_path):
    path = write_yaml(tmp_path, {"env": {"init_states": "50-54"}, "evaluate": {"init_states": ["0-2", 9]}})
    cfg = load_config(path, environ={})
    assert cfg.env.init_states == [50, 51, 52, 53, 54]
    assert cfg.evaluate.init_states == [0, 1, 2, 9]
    assert load_config(None, ["env.tasks=[3-3]"], environ={}).env.tasks == [3]
    with pytest.raises(CfgrlError, match="range '5-2' is empty"):
        load_config(None, ["env.init_states=5-2"], environ={})
    with pytest.raises(CfgrlError, match="expects an integer"):
        load_config(None, ["env.init_states=[1-x]"], environ={})


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["cfgrl.label_threshold=0.25", "evaluate.cfg_scales=[0, 2]", "env.tasks=[1,2]",
                             "cfgrl.use_prefix_dropout=true"], environ={})
    assert cfg.cfgrl.label_threshold == 0.25
    assert cfg.evaluate.cfg_scales == [0.0, 2.0]
    assert cfg.env.tasks == [1, 2]
    assert cfg.cfgrl.use_prefix_dropout is True
    with pytest.raises(CfgrlError, match="expects an integer"):
        load_config(None, ["collect.groups=two"], environ={})


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.condition_mode=film", "choose one of: token, bias, concat"),
        ("inference.cfg_scale=-1", "must be >= 0"),
        ("env.mesh_grid_mm=-5", r"env.mesh_grid_mm must be >= 0 \(0 = meshes as shipped"),
        ("cfgrl.dropout_prob=1.5", r"must be in \[0, 1\]"),
        ("cfgrl.label_source=gae", "episode_rloo, window_rloo, window_return, value, none"),
        ("collect.group_size=1", "at least 2"),
        ("collect.adaptive_patience=0", "collect.adaptive_patience must be at least 1"),
        ("collect.envs_per_worker=0", "collect.envs_per_worker must be at least 1, got 0"),
        ("collect.workers=0", "collect.workers must be at least 1 .or null = fits the machine., got 0"),
        ("cfgrl.dropout_pro=0.1", "did you mean 'cfgrl.dropout_prob'"),
        ("dropout_prob", "section.key=value"),
        ("train.grad_accum=0", "train.grad_accum must be at least 1"),
        ("train.lr=0", "train.lr must be > 0"),
        ("train.keep_last=0", "train.keep_last must be at least 1"),
        ("train.keep_every=-1", "train.keep_every >= 0"),
        ("train.optimal_repeat=0", "train.optimal_repeat must be at least 1"),
        # non-finite and out-of-range numbers, which trained a NaN or diverging policy with rc 0
        ("train.lr=inf", "config key 'train.lr' must be a finite number, got inf"),
        ("train.lr=nan", "config key 'train.lr' must be a finite number, got nan"),
        ("train.decay_lr=nan", "config key 'train.decay_lr' must be a finite number, got nan"),
        ("train.grad_clip=nan", "config key 'train.grad_clip' must be a finite number"),
        ("inference.cfg_scale=.nan", "config key 'inference.cfg_scale' must be a finite number"),
        ("evaluate.cfg_scales=[1, .inf]", r"evaluate.cfg_scales must all be finite numbers >= 0 .*, got \[1.0, inf\]"),
        ("train.ema_decay=2", r"train.ema_decay must be in \[0, 1\) \(or null = no EMA\), got 2.0"),
        ("train.decay_steps=0", "train.decay_steps must be at least 1, got 0"),
        ("train.warmup_steps=-5", "train.warmup_steps must be >= 0, got -5"),
        ("train.weight_decay=-1", "train.weight_decay must be >= 0, got -1.0"),
        ("train.betas=[0.9]", r"train.betas must be two numbers in \[0, 1\) .*, got \[0.9\]"),
        ("train.betas=[2, 3]", r"train.betas must be two numbers in \[0, 1\)"),
        ("collect.seed=-1", "collect.seed must be >= 0, got -1"),
        ("cfgrl.seed=-3", "cfgrl.seed must be >= 0, got -3"),
    ],
)
def test_bad_values_name_what_is_accepted(override, message):
    with pytest.raises(CfgrlError, match=message):
        load_config(None, [override], environ={})


def test_optimal_repeat_is_refused_outside_the_cfgrl_objective():
    with pytest.raises(CfgrlError, match="objective cfgrl only .* got objective filtered_bc"):
        load_config(None, ["train.optimal_repeat=2", "train.objective=filtered_bc"], environ={})
    assert load_config(None, ["train.optimal_repeat=2"], environ={}).train.optimal_repeat == 2


def test_retired_weighted_loss_keys_explain_replacement(tmp_path):
    with pytest.raises(CfgrlError, match="CFGRL trains unweighted"):
        load_config(write_yaml(tmp_path, {"cfgrl": {"alpha_uncond": 0.5}}), environ={})
    with pytest.raises(CfgrlError, match="retired"):
        load_config(None, ["train.use_binary_advantage=true"], environ={})
    with pytest.raises(CfgrlError, match="PI0_CFG_SCALE"):
        load_config(environ={"PI0_IS_POSITIVE": "1"})
    with pytest.raises(CfgrlError, match="not a number"):
        load_config(environ={"PI0_CFG_SCALE": "high"})


def test_saved_config_round_trips():
    cfg = load_config(None, ["cfgrl.label_source=window_rloo", "train.steps=7"], environ={})
    assert config_from_dict(cfg.to_dict()) == cfg


def test_cli_prints_one_line_and_exits_nonzero():
    result = subprocess.run(
        [sys.executable, "-m", "cfgrl.cli", "label", "nowhere.zarr", "-o", "policy.condition_mode=film"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_their_splits_pass_the_protocol_check(path):
    """Every file under configs/ (what the Makefile runs) is valid, and its training, validation and
    test init states never meet."""
    from cfgrl.evaluate.plan import check_protocol

    check_protocol(load_config(path))
