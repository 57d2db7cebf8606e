"""A policy evaluate must not run stops in one line before anything is written: one whose weights are
NaN (a diverged training run's, which crashed an env worker), one whose weights it may not read."""

import pathlib

from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cfgrl.cli import app

from eval_helpers import SETTINGS, save_tiny_policy


def _evaluate(policy, out):
    overrides = [x for s in SETTINGS for x in ("-o", s)]
    result = CliRunner().invoke(app, ["evaluate", str(policy), "--out", str(out), *overrides])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def test_a_policy_with_non_finite_weights_is_refused_on_load(tmp_path):
    policy = save_tiny_policy(tmp_path / "policy", True)
    weights = load_file(policy / "model.safetensors")
    key = sorted(k for k, v in weights.items() if v.is_floating_point())[0]
    weights[key][0] = float("nan")
    save_file(weights, policy / "model.safetensors")
    code, lines = _evaluate(policy, tmp_path / "run")
    assert code == 2 and len(lines) == 1, lines
    assert f"{policy}/model.safetensors: tensor '{key}' holds non-finite values (NaN or inf)" in lines[0]
    assert not (tmp_path / "run").exists()


def test_an_unreadable_model_file_is_named_with_the_permission_it_lacks(checkpoints, tmp_path, monkeypatch):
    """CI runs as root, which chmod 000 does not stop: the PermissionError is injected where the file is opened."""
    policy, _ = checkpoints
    real_open = pathlib.Path.open

    def deny(self, *args, **kwargs):
        if self.name == "model.safetensors":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", deny)
    code, lines = _evaluate(policy, tmp_path / "run")
    assert code == 2 and len(lines) == 1, lines
    assert f"cannot open '{policy}/model.safetensors': permission denied" in lines[0] and "read permission" in lines[0]
    assert not (tmp_path / "run").exists()
