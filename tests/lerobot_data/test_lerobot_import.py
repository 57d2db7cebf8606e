"""`cfgrl import` on the LeRobotDataset lerobot 0.6.1 wrote (tests/fixtures/make_lerobot_dataset.py): what it
imports against what lerobot decoded, then label, train and the round's joint labelling on it; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DATASET = FIXTURES / "lerobot_dataset"
GOLDEN = FIXTURES / "lerobot_dataset_golden.npz"
SMALL = ["-o", "env.image_size=32"]  # the fixture's own size: frames compare without resizing
PROMPTS = {0: "grasp the top left ball", 1: "grasp the bottom right ball", 3: "grasp the top left ball"}  # episode 2: no builtin task

runner = CliRunner()


def cfgrl(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.output


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    store = tmp_path_factory.mktemp("import") / "demos.zarr"
    result = cfgrl("import", store, "--lerobot", DATASET, "--suite", "reach", *SMALL)
    assert result.exit_code == 0, result.output
    assert "3 of 4 episodes" in result.output and "skipping 1 of task 'open the top drawer of the cabinet'" in result.output
    return Store(store)


def test_episodes_prompts_actions_states_and_frames_match_what_lerobot_decoded(imported, golden):
    ep = imported.episodes
    assert list(ep.group_id) == [0, 1, 3] and list(ep.prompt) == [PROMPTS[i] for i in (0, 1, 3)]
    assert list(ep.task_id) == [0, 3, 0] and set(ep.init_state_id) == {-1} and set(ep.num_wait_steps) == {0}
    assert set(ep.policy_id) == {"demonstration"} and ep.success.all() and set(ep.rollout_index) == {0}
    steps = imported.frame_steps()
    for e, row in ep.iterrows():
        rows = golden["episode_index"] == row.group_id
        assert row.length == rows.sum() and set(golden["task"][rows]) == {row.prompt}
        np.testing.assert_array_equal(imported.episode_steps(e, "action"), golden["action"][rows])
        np.testing.assert_array_equal(imported.episode_steps(e, "state"), golden["observation.state"][rows])
        reward = imported.episode_steps(e, "reward")
        assert reward[-1] == 1.0 and reward[:-1].sum() == 0 and imported.episode_steps(e, "done")[-1]
        frames = slice(row.frame_start, row.frame_start + row.frame_count)
        assert list(steps[frames]) == list(range(0, row.length, 5))  # inference.replan_steps: a collected store's layout
        for camera, key in (("agentview", "observation.images.image"), ("wrist", "observation.images.wrist_image")):
            ours = imported.block(f"frames/{camera}", frames.start, frames.stop).astype(int)
            assert np.abs(ours - golden[key][rows][steps[frames]]).max() <= 2  # same AV1 stream; PNG exact
    record = imported.attrs["imports"][0]
    assert imported.attrs["demonstrations"] and record["episodes"] == [0, 1, 3] and record["skipped_episodes"] == 1
    assert record["info_sha256"] and record["dataset"] == str(DATASET) and record["run_id"] == ep.run_id[0]


def test_a_rerun_resumes_and_imports_nothing(imported):
    result = cfgrl("import", imported.path, "--lerobot", DATASET, "--suite", "reach", *SMALL)
    assert result.exit_code == 0 and "3 already imported, 0 to import" in result.output
    assert Store(imported.path).num_episodes == 3 and len(Store(imported.path).attrs["imports"]) == 1


def test_frames_resized_to_the_env_and_the_success_column(tmp_path):
    store = tmp_path / "big.zarr"
    result = cfgrl("import", store, "--lerobot", DATASET, "--suite", "reach", "--success-column", "success")
    assert result.exit_code == 0, result.output
    s = Store(store)
    assert s.layout.image_shape == (64, 64, 3) and list(s.episodes.success) == [True, True, False]
    assert s.episode_steps(2, "reward").sum() == 0


def test_label_gives_successful_demonstrations_o1_and_trains_one_step(imported, tmp_path):
    result = cfgrl("label", imported.path, "--out", tmp_path / "labels", "-o", "cfgrl.dropout_prob=0")
    assert result.exit_code == 0, result.output
    (version,) = [p for p in (tmp_path / "labels").iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"]["demonstration_windows"] == manifest["counts"]["windows"] == 8
    assert manifest["counts"]["label_share"]["1"] == 1.0
    unconditional = cfgrl("label", imported.path, "--out", tmp_path / "u", "-o", "cfgrl.demonstrations=unconditional",
                          "-o", "cfgrl.label_source=none")
    assert unconditional.exit_code == 0, unconditional.output
    trained = cfgrl("train", imported.path, "--labels", version, "--out", tmp_path / "run", "-o", "train.steps=1",
                    "-o", "train.batch_size=4", *SMALL)
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "policy" / "config.json").is_file()


def rollout_store(path: Path) -> Store:
    """A round's own store: two groups of K=2 from one policy, mixed outcomes, the imported store's layout."""
    rng = np.random.default_rng(0)
    with StoreWriter(path, StoreLayout(("agentview", "wrist"), (32, 32, 3), 8, 7), commit_seconds=1e9) as writer:
        for g in range(2):
            for k in range(2):
                length, success = 12, k == 0
                reward = np.zeros(length, np.float32)
                reward[-1] = float(success)
                steps = np.arange(0, length, 5)
                meta = dict(num_wait_steps=0, task_id=g, init_state_id=g, group_id=g, rollout_index=k, seed=k, success=success,
                            cfg_scale=1.0, env="builtin", suite="reach", prompt=PROMPTS[0], policy_id="p", run_id="r",
                            renderer="numpy", init_config="[]")
                writer.append(EpisodeData(rng.normal(size=(length, 8)).astype(np.float32), rng.uniform(-1, 1, (length, 7)).astype(np.float32),
                                          reward, reward > 0, np.zeros(length, bool),
                                          {c: rng.integers(0, 255, (len(steps), 32, 32, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                                          steps, meta))
    return Store(path)


def test_a_round_labels_and_trains_its_rollouts_with_the_imported_store(imported, tmp_path):
    """What `cfgrl round --with-store` runs for its stores: stages.label then stages.train."""
    from cfgrl.config import load_config
    from cfgrl.pipeline import stages

    rollouts = rollout_store(tmp_path / "round.zarr")
    cfg = load_config(None, ["env.image_size=32", "train.steps=1", "train.batch_size=4", "cfgrl.dropout_prob=0"])
    labels = stages.label(cfg, [rollouts.path, imported.path], tmp_path / "labels")
    manifest = json.loads((labels / "manifest.json").read_text())
    assert manifest["counts"]["demonstration_windows"] == 8 and manifest["counts"]["windows"] == 8 + 12
    policy = stages.train(cfg, [rollouts.path, imported.path], labels, tmp_path / "run", None)
    assert (policy / "config.json").is_file()


def broken_copy(tmp_path: Path, edit) -> Path:
    copy = tmp_path / "dataset"
    shutil.copytree(DATASET, copy)
    edit(copy)
    return copy


def edit_info(change):
    def edit(root: Path) -> None:
        info = json.loads((root / "meta" / "info.json").read_text())
        change(info)
        (root / "meta" / "info.json").write_text(json.dumps(info))
    return edit


def truncate(relative: str, keep: float):
    def edit(root: Path) -> None:
        path = root / relative
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return edit


VIDEO = "videos/observation.images.image/chunk-000/file-000.mp4"


@pytest.mark.parametrize("edit, extra, words", [
    (edit_info(lambda i: i.update(codebase_version="v2.1")), [], ["v2.1", "v3.0 only", "convert_dataset_v21_to_v30"]),
    (edit_info(lambda i: i["features"].pop("action")), [], ["no feature 'action'"]),
    (edit_info(lambda i: i["features"]["observation.state"].update(shape=[9])), [], ["shape [9]", "state of 8"]),
    (lambda root: None, ["--camera", "observation.images.top=agentview", "--camera", "observation.images.wrist_image=wrist"],
     ["camera 'agentview'", "observation.images.top"]),
    (lambda root: None, ["--camera", "observation.images.image"], ["--camera 'observation.images.image' is not valid", "DATASET_KEY=ENV_CAMERA"]),
    (lambda root: None, ["--strict"], ["episode 2", "not a task of suite builtin/reach"]),
    (lambda root: None, ["--success-column", "action"], ["--success-column 'action' is not a boolean feature"]),
    (truncate("data/chunk-000/file-000.parquet", 0.5), [], ["file-000.parquet", "not a readable parquet file"]),
    (truncate("meta/tasks.parquet", 0.3), [], ["tasks.parquet", "not a readable parquet file"]),
    (truncate(VIDEO, 0.6), [], ["file-000.mp4"]),
    (truncate(VIDEO, 0.02), [], ["file-000.mp4"]),
    (lambda root: (root / VIDEO).unlink(), [], ["file-000.mp4", "missing"]),
])
def test_bad_input_is_one_line_and_leaves_no_store(tmp_path, edit, extra, words):
    store = tmp_path / "demos.zarr"
    refused(cfgrl("import", store, "--lerobot", broken_copy(tmp_path, edit), "--suite", "reach", *SMALL, *extra), *words)
    assert not store.exists() and not (tmp_path / ".tmp-demos.zarr").exists()


def test_no_dataset_and_a_suite_with_none_of_its_tasks(tmp_path):
    refused(cfgrl("import", tmp_path / "s.zarr", "--lerobot", tmp_path / "nowhere", *SMALL), "does not exist")
    refused(cfgrl("import", tmp_path / "s.zarr", "--lerobot", tmp_path, *SMALL), "not a LeRobotDataset")
    libero = FIXTURES.parent.parent / "configs" / "libero.yaml"
    refused(cfgrl("import", tmp_path / "s.zarr", "--lerobot", DATASET, "--suite", "libero_spatial", "-c", libero, *SMALL),
            "no episode", "libero/libero_spatial", "the dataset's tasks: grasp the bottom right ball; grasp the top left ball;",
            "the suite's: pick up the black bowl", "-c")
    assert not (tmp_path / "s.zarr").exists()


def test_cfgrl_base_behaviour_clones_on_an_imported_store(imported, tmp_path):
    root = tmp_path / "b"
    args = ("base", root, "--store", imported.path, "--base-steps", "1", "-o", "train.batch_size=4", *SMALL)
    result = cfgrl(*args)
    assert result.exit_code == 0, result.output
    assert (root / "base" / "policy" / "config.json").is_file() and not (root / "demos.zarr").exists()  # nothing collected
    (version,) = [p for p in (root / "base.labels").iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["settings"]["label_source"] == "none" and manifest["counts"]["demonstration_windows"] == 8
    assert not (imported.path.parent / "demos.labels").exists()  # the store is only read
    again = cfgrl(*args)
    assert again.exit_code == 0 and "is finished, skipping" in again.output


def test_cfgrl_base_on_a_store_refuses_a_missing_store_and_scripted_demo_options(imported, tmp_path):
    refused(cfgrl("base", tmp_path / "b", "--store", tmp_path / "none.zarr"), "none.zarr", "does not exist", "cfgrl import")
    refused(cfgrl("base", tmp_path / "b", "--store", DATASET), "is not a store")
    refused(cfgrl("base", tmp_path / "b", "--store", imported.path, "--demo-episodes", "4"), "--demo-episodes", "--store")
    assert not (tmp_path / "b").exists()


def test_importing_with_another_replan_steps_into_the_store_is_refused(imported):
    result = cfgrl("import", imported.path, "--lerobot", DATASET, "--suite", "reach", *SMALL, "-o", "inference.replan_steps=3")
    refused(result, "inference.replan_steps=5 but this run's is 3", "write to a new store")
    assert Store(imported.path).num_episodes == 3
