"""`cfgrl export-dataset` of a collected, labelled store against what lerobot 0.6.1 read from the same export
(tests/fixtures/make_lerobot_dataset.py --check-export), the advantages sidecar, a round trip through
`cfgrl import`, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.label import load_label_index
from cfgrl.lerobot_data.video import VideoFile
from cfgrl.store import Store

from export_store import CAMERAS, build, reference

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
runner = CliRunner()


def cfgrl(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURES / "lerobot_export_golden.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}, json.loads((FIXTURES / "lerobot_export_golden.json").read_text())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = root / "export.zarr"
    version = build(store)
    result = cfgrl("export-dataset", store, root / "out", "--labels", f"{store}@export")
    assert result.exit_code == 0, result.output
    return store, root / "out", version


def decoded(out: Path, key: str, fps: int, length: int) -> np.ndarray:
    video = VideoFile(out / "videos" / key / "chunk-000" / "file-000.mp4", fps)
    try:
        return video.frames(0.0, length, np.arange(length), 32)
    finally:
        video.close()


def test_structure_and_values_match_what_lerobot_read(exported, golden):
    store, out, version = exported
    values, record = golden
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"] == record["info"]["features"] and info["fps"] == 10 and info["codebase_version"] == "v3.0"
    assert {k: info[k] for k in ("total_episodes", "total_frames", "total_tasks")} == \
           {k: record["info"][k] for k in ("total_episodes", "total_frames", "total_tasks")}
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [f.replace(record["labels_version"], version) for f in record["files"]]
    data = pd.read_parquet(out / "data" / "chunk-000" / "file-000.parquet")
    for key in ("observation.state", "action"):  # exact, as lerobot read them
        np.testing.assert_array_equal(np.stack(data[key].to_numpy()), values[key])
    for key in ("episode_index", "frame_index", "index", "task_index"):
        np.testing.assert_array_equal(data[key].to_numpy(), values[key])
    np.testing.assert_allclose(data["timestamp"].to_numpy(), values["timestamp"])
    ref = reference(store)
    for key in CAMERAS.values():
        ours = decoded(out, key, info["fps"], len(data)).astype(int)
        assert np.abs(ours - values[key]).mean() <= 1.0  # our decode and lerobot's of one AV1 stream
        loss = np.abs(ours - ref[key]).mean()  # the codec's loss, as measured when lerobot loaded it
        assert loss <= record["codec_loss"][key]["mean_abs"] + 1.0


def test_stats_hold_the_quantiles_pi05_normalises_by(exported):
    stats = json.loads((exported[1] / "meta" / "stats.json").read_text())
    for key in ("observation.state", "action", "observation.images.image", "observation.images.wrist_image"):
        assert set(stats[key]) == {"mean", "std", "min", "max", "count", "q01", "q10", "q50", "q90", "q99"}
    action = np.stack(pd.read_parquet(exported[1] / "data" / "chunk-000" / "file-000.parquet").action.to_numpy())
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(action.astype(np.float64), 0.99, axis=0))
    assert np.array(stats["observation.images.image"]["mean"]).shape == (3, 1, 1)


def test_the_advantages_sidecar_holds_the_versions_windows_and_settings(exported):
    store, out, version = exported
    table = pq.read_table(out / "meta" / f"advantages_{version}.parquet")
    meta = json.loads(table.schema.metadata[b"cfgrl"])
    index = load_label_index(f"{store}@{version}")
    assert meta["schema"] == "cfgrl.lerobot_advantages" and meta["settings"] == index.manifest["settings"]
    sidecar = table.to_pandas()
    windows = index.windows.sort_values(["episode", "start"], ignore_index=True)
    np.testing.assert_array_equal(sidecar.frame_index, windows.start)
    np.testing.assert_array_equal(sidecar.advantage, windows.advantage)
    assert sidecar.o.equals(windows.raw_label.rename("o")) and (sidecar.o == 1).sum() > 0


def test_importing_the_export_gives_the_same_episodes_back(exported, tmp_path):
    store, out, _ = exported
    back = tmp_path / "back.zarr"
    result = cfgrl("import", back, "--lerobot", out, "--suite", "reach", "--success-column", "success", "-o", "env.image_size=32")
    assert result.exit_code == 0, result.output
    a, b = Store(store), Store(back)
    assert list(a.episodes.prompt) == list(b.episodes.prompt) and list(a.episodes.success) == list(b.episodes.success)
    assert list(a.episodes.length) == list(b.episodes.length) and list(a.frame_steps()) == list(b.frame_steps())
    for name in ("state", "action", "reward", "done"):
        np.testing.assert_array_equal(a.read_steps(name), b.read_steps(name))
    for camera in CAMERAS:
        diff = np.abs(a.block(f"frames/{camera}", 0, a.num_frames).astype(int) - b.block(f"frames/{camera}", 0, b.num_frames))
        assert diff.mean() < 8  # crf 30 AV1 at 32 px


def test_bad_input_is_one_line_and_writes_nothing(exported, tmp_path):
    store, out, _ = exported
    for args, words in [
        ((store, out), ["exists"]),
        ((tmp_path / "none.zarr", tmp_path / "o1"), ["does not exist"]),
        ((store, tmp_path / "o2", "--labels", f"{store}@nope"), ["no label version or name 'nope'"]),
    ]:
        result = cfgrl("export-dataset", *args)
        assert result.exit_code == 2 and result.output.count("error:") == 1 and all(w in result.output for w in words), result.output
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    foreign = tmp_path / "foreign.zarr"  # the import fixture's demonstrations, labelled: a version of another store
    assert cfgrl("import", foreign, "--lerobot", FIXTURES / "lerobot_dataset", "--suite", "reach", "-o", "env.image_size=32").exit_code == 0
    assert cfgrl("label", foreign, "-o", "cfgrl.label_source=none").exit_code == 0
    result = cfgrl("export-dataset", store, tmp_path / "o3", "--labels", foreign)
    assert result.exit_code == 2 and "was not made from store" in result.output and not (tmp_path / "o3").exists()
    assert not list(tmp_path.glob(".tmp-*"))
