"""Nothing trained or written silently wrong: a run whose loss turns non-finite stops with its last good
checkpoint; bad settings, damaged checkpoints and files it may not read or write stop in one line, and
a refused run leaves nothing behind."""

import json
import pathlib
import shutil

from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.policy import PI0Policy

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(map(str, args)))
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result.exit_code, lines


def _train(store, labels, out, *overrides: str):
    args = ["train", store, "--labels", labels, "--out", out, "-o", "train.steps=2", "-o", "train.batch_size=8"]
    return _run(*args, *[item for o in overrides for item in ("-o", o)])


def test_a_diverging_run_stops_keeping_its_last_good_checkpoint_and_a_damaged_one_is_not_resumed(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    run = tmp_path / "run"
    # a real divergence: the first step's update (~lr) makes every later activation overflow
    code, lines = _train(store, labels, run, "train.lr=1e30", "train.save_every=1", "train.warmup_steps=0")
    assert code == 2 and len(lines) == 1, lines
    assert "training stopped at step 2: the loss is not finite (NaN or inf), so this step was not applied" in lines[0]
    step_1 = run / "checkpoints" / "step_1"
    assert f"the last good checkpoint, {step_1}, is kept" in lines[0]
    assert (run / "last").resolve() == step_1 and sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1"]
    PI0Policy.from_pretrained(step_1)  # whole, and finite
    (step_1 / "training_state" / "trainer.json").write_text('{"schema": "cfgrl.train_ch')  # cut short
    code, lines = _run("train", store, "--labels", labels, "--out", run, "--resume")
    assert code == 2 and len(lines) == 1 and f"'{step_1}/training_state/trainer.json' is damaged (not a JSON object)" in lines[0]


def test_non_finite_or_out_of_range_settings_are_refused_before_anything_is_written(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    for setting in ("train.lr=inf", "train.decay_lr=nan", "train.ema_decay=2", "train.betas=[2, 3]", "cfgrl.seed=-1"):
        code, lines = _train(store, labels, tmp_path / "run", setting)
        assert code == 2 and len(lines) == 1 and setting.split("=")[0] in lines[0], (setting, lines)
    code, lines = _run("collect", tmp_path / "new.zarr", "-o", "inference.cfg_scale=nan")
    assert code == 2 and len(lines) == 1 and "inference.cfg_scale' must be a finite number, got nan" in lines[0]
    assert sorted(tmp_path.iterdir()) == []  # no run directory, no empty store, no lock file


def test_a_run_refused_for_frames_that_do_not_decode_leaves_no_run_directory(small_run_inputs, tmp_path):
    source, labels = small_run_inputs
    store = tmp_path / "s.zarr"
    shutil.copytree(source, store)
    (store / "frames" / "wrist" / "c" / "0" / "0" / "0" / "0").write_bytes(b"not zstd" * 8)
    code, lines = _train(store, labels, tmp_path / "run")
    assert code == 2 and len(lines) == 1 and "frames/wrist rows 0-" in lines[0]
    assert not (tmp_path / "run").exists()


def test_files_it_may_not_read_or_write_are_named_in_one_line(small_run_inputs, tmp_path, monkeypatch):
    """CI runs as root, which chmod does not stop: the permission errors are injected where the file is opened."""
    store, labels = small_run_inputs
    real_open, real_mkdir = pathlib.Path.open, pathlib.Path.mkdir

    def deny_open(self, *args, **kwargs):
        if self.name == "manifest.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", deny_open)
    code, lines = _train(store, labels, tmp_path / "run")
    assert code == 2 and len(lines) == 1 and f"cannot open '{labels}/manifest.json': permission denied" in lines[0]
    assert "read permission" in lines[0] and not (tmp_path / "run").exists()
    monkeypatch.setattr(pathlib.Path, "open", real_open)

    readonly = tmp_path / "readonly"
    readonly.mkdir()

    def deny_mkdir(self, *args, **kwargs):
        if self.parent == readonly:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", deny_mkdir)
    code, lines = _train(store, labels, readonly / "run")
    assert code == 2 and len(lines) == 1 and f"cannot create '{readonly / 'run'}': permission denied" in lines[0]
    assert f"write permission on '{readonly}'" in lines[0]


def test_label_out_an_existing_file_is_refused(small_run_inputs, tmp_path):
    store, _ = small_run_inputs
    out = tmp_path / "labels"
    out.write_text("mine")
    code, lines = _run("label", store, "--out", out)
    assert code == 2 and len(lines) == 1 and f"--out '{out}' is a file, not a directory" in lines[0]
    assert out.read_text() == "mine"
