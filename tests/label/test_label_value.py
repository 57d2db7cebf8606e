"""`cfgrl.label_source: value`: the N-step advantage by hand from V written directly, per-task quantile
thresholds, the index pinning the value model, no image read, and one clear line on bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import CFGRLConfig
from cfgrl.label import make_label_index
from cfgrl.schemas import VALUE
from cfgrl.store import Store
from cfgrl.value.output import COLUMNS, ValueOutput, value_id

from label_stores import REPLAN, Ep, sparse, write_store

runner = CliRunner()


def write_values(path, stores, values, env="builtin", cameras=("agentview", "wrist"), penalty=1.0):
    """A value model's output with the given V per stored frame (one array per store), L = 50."""
    parts = []
    for i, (store, v) in enumerate(zip(stores, values)):
        ep = store.episodes
        episode = np.repeat(np.arange(len(ep)), ep.frame_count.to_numpy())
        parts.append(pd.DataFrame({"store": i, "frame": np.arange(store.num_frames), "episode": episode,
                                   "step": store.frame_steps(), "fold": episode % 2, "target": 0.0, "value": v}))
    table = pd.concat(parts).astype(COLUMNS)
    settings = {"failure_penalty": penalty}
    fingerprints = [s.fingerprint() for s in stores]
    manifest = {**VALUE.stamp(), "id": value_id(settings, fingerprints, table), "settings": settings, "env": env,
                "camera_names": list(cameras), "max_length": {"reach": 50},
                "stores": [{"path": str(s.path), "fingerprint": f} for s, f in zip(stores, fingerprints)]}
    path.mkdir()
    table.to_parquet(path / "values.parquet", index=False)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return ValueOutput.read(path)


def label(stores, value, out, **settings):
    cfg = CFGRLConfig(label_source="value", dropout_prob=0.0, **settings)
    return make_label_index(stores, cfg, REPLAN, out, None, value=value)


def test_n_step_advantage_hand_computed(make_store, tmp_path):
    store = make_store([Ep(sparse(23, True), group=0), Ep(sparse(12, False), group=0)])  # frames at 0, 5, 10, ...
    v = np.array([-0.10, -0.12, -0.14, -0.16, -0.18, -0.50, -0.60, -0.70])  # episode 0's 5 frames, then episode 1's 3
    value = write_values(tmp_path / "v", [store], [v])
    table = label([store], value, tmp_path / "l", value_horizon=10).windows
    # A = clip(sum_{k<10} r_{t+k} / 50 + V(o_{t+10}), -1, 0) - V(o_t); r = -1 per step, 0 at the success, -50 at a failure's end
    expected = [
        -0.20 - 0.14 + 0.10,  # t=0: ten steps of -1, V(o_10)
        -0.20 - 0.16 + 0.12,
        -0.20 - 0.18 + 0.14,
        -0.14 + 0.16,  # t=15: seven -1 and the success's 0, then the episode ended: V = 0
        -0.04 + 0.18,
        -0.20 - 0.70 + 0.50,  # the failure
        -1.00 + 0.60,  # t=5: (-6 - 50) / 50 = -1.12, clipped to -1 as the value's targets are
        -1.00 + 0.70,
    ]
    np.testing.assert_allclose(table.advantage, expected, atol=1e-6)
    default = label([store], value, tmp_path / "l").windows  # N = the window length, 50: Monte-Carlo to the end
    np.testing.assert_allclose(default.advantage[:2], [-22 / 50 + 0.10, -17 / 50 + 0.12], atol=1e-6)


def two_task_store(path):
    return write_store(path, [Ep(sparse(50, i < 2), group=i // 2, task=i // 2) for i in range(4)])  # 10 frames each


def test_thresholds_are_per_task_quantiles_or_one_fixed_threshold(tmp_path):
    store = two_task_store(tmp_path / "s.zarr")
    v = np.random.default_rng(0).uniform(-0.9, -0.1, store.num_frames)
    v[20:] -= 0.05  # the two tasks' advantages differ in scale
    value = write_values(tmp_path / "v", [store], [v])
    index = label([store], value, tmp_path / "l", label_quantile=0.8)
    w = index.windows
    assert index.manifest["settings"]["label_quantile"] == 0.8 and index.manifest["settings"]["label_threshold"] is None
    for task in (0, 1):
        mine = w[w.task_id == task]
        threshold = np.quantile(mine.advantage, 0.8)
        assert index.manifest["counts"]["threshold_per_task"][str(task)] == pytest.approx(threshold)
        assert (mine.raw_label.fillna(0) == 1).tolist() == (mine.advantage >= threshold).tolist()
        assert (mine.raw_label == 1).sum() == 4  # the top 20% of 20 windows
    default = label([store], value, tmp_path / "l")  # RECAP's top 30% per task
    assert default.manifest["settings"]["label_quantile"] == 0.7
    assert [(default.windows[default.windows.task_id == t].raw_label == 1).sum() for t in (0, 1)] == [6, 6]
    fixed = label([store], value, tmp_path / "l", label_threshold=-0.2)
    assert (fixed.windows.raw_label.fillna(0) == 1).tolist() == (fixed.windows.advantage >= -0.2).tolist()
    assert fixed.manifest["settings"]["label_quantile"] is None


def test_the_index_pins_the_value_model(tmp_path):
    store = two_task_store(tmp_path / "s.zarr")
    v = np.linspace(-0.9, -0.1, store.num_frames)
    first = label([store], write_values(tmp_path / "v1", [store], [v]), tmp_path / "l")
    assert first.manifest["settings"]["value_model"] == ValueOutput.read(tmp_path / "v1").id
    assert first.manifest["value_model"]["path"] == str(tmp_path / "v1")
    again = label([store], write_values(tmp_path / "v2", [store], [v]), tmp_path / "l")  # the same values: the same model
    assert again.reused and again.version == first.version
    other = label([store], write_values(tmp_path / "v3", [store], [v[::-1].copy()]), tmp_path / "l")
    assert not other.reused and other.version != first.version
    assert other.manifest["settings"]["value_model"] != first.manifest["settings"]["value_model"]


def test_labelling_with_value_reads_no_image_array(tmp_path):
    store = two_task_store(tmp_path / "s.zarr")
    value = write_values(tmp_path / "v", [store], [np.linspace(-0.9, -0.1, store.num_frames)])
    reference = label([store], value, tmp_path / "ref").windows
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store.path, copy)
    # every image chunk corrupt (an absent one is refused on open: the store lists its chunks, decoding none)
    for chunk in [*(copy / "frames" / "agentview" / "c").rglob("*"), *(copy / "frames" / "wrist" / "c").rglob("*")]:
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    table = label([Store(copy)], value, tmp_path / "copy.labels").windows
    pd.testing.assert_frame_equal(table, reference)


@pytest.mark.parametrize("case", ["other env", "other cameras", "other store", "no rewards", "quantile 1",
                                  "quantile 0", "both thresholds", "value without --value", "--value without value"])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, case):
    store = two_task_store(tmp_path / "s.zarr")
    v = np.linspace(-0.9, -0.1, store.num_frames)
    kwargs = {"other env": {"env": "libero"}, "other cameras": {"cameras": ("agentview",)}}.get(case, {})
    if case == "other store":
        other = write_store(tmp_path / "o.zarr", [Ep(sparse(12, True), group=0), Ep(sparse(12, False), group=0)])
        write_values(tmp_path / "v", [other], [np.zeros(other.num_frames)])
    elif case == "no rewards":
        store = write_store(tmp_path / "bare.zarr", [Ep([0.0] * 12, group=0, success=True), Ep(sparse(12, False), group=0)])
        write_values(tmp_path / "v", [store], [np.zeros(store.num_frames)])
    else:
        write_values(tmp_path / "v", [store], [v], **kwargs)
    args = ["label", store.path, "--value", tmp_path / "v", "-o", "cfgrl.label_source=value"]
    extra = {"quantile 1": ["-o", "cfgrl.label_quantile=1.0"], "quantile 0": ["-o", "cfgrl.label_quantile=0"],
             "both thresholds": ["-o", "cfgrl.label_quantile=0.7", "-o", "cfgrl.label_threshold=0"]}.get(case, [])
    if case == "value without --value":
        args = args[:2] + args[4:]
    if case == "--value without value":
        args = args[:4]
    message = {
        "other env": "was trained on env 'libero' with cameras agentview, wrist, but store",
        "other cameras": "was trained on env 'builtin' with cameras agentview, but store",
        "other store": "holds no values for store",
        "no rewards": "is marked successful but its last step has reward 0",
        "quantile 1": "cfgrl.label_quantile must be in (0, 1)", "quantile 0": "cfgrl.label_quantile must be in (0, 1)",
        "both thresholds": "cfgrl.label_quantile and cfgrl.label_threshold are both set",
        "value without --value": "cfgrl.label_source=value needs a value model: give --value DIR",
        "--value without value": "--value is given but cfgrl.label_source is episode_rloo",
    }[case]
    result = runner.invoke(app, [*map(str, args), *extra])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not list(tmp_path.glob("*.labels"))


def test_label_command_with_value_prints_the_model_and_per_task_thresholds(tmp_path):
    store = two_task_store(tmp_path / "s.zarr")
    value = write_values(tmp_path / "v", [store], [np.linspace(-0.9, -0.1, store.num_frames)])
    result = runner.invoke(app, ["label", str(store.path), "--value", str(tmp_path / "v"), "-o", "cfgrl.label_source=value"])
    assert result.exit_code == 0, result.output
    assert f"(value, value model {value.id}, N 50, binary, quantile 0.7 per task," in result.output
    assert "zero-variance groups: n/a" in result.output and "threshold per task: task 0 " in result.output
    listed = runner.invoke(app, ["label", "--list", str(store.path)])
    assert "value/binary  quantile 0.7 per task" in listed.output
