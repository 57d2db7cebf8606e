"""`cfgrl import`: a local LeRobotDataset v3.0 -> a store of demonstrations, resumable, one writer.

One store episode per dataset episode whose task is one of the suite's prompts: its actions and
states; the frames at every ``inference.replan_steps``-th step, resized to ``env.image_size`` (the
layout of a collected store, so both train together); 0 wait steps; reward 1.0 at the last step and
success 1, or the last value of a boolean ``--success-column``. What the dataset does not say is set
so that nothing mistakes it for a rollout: init state id −1 (unknown; evaluation's split checks match
it with nothing), group id = the dataset's episode index (a group of one), policy id
``demonstration`` (``cfgrl.demonstrations``). Where the episodes came from (dataset path,
``info.json`` digest, episode indices) is the store's root attribute ``imports``; the run id hashes
the dataset's digest with the import's settings, so re-running the same import skips what is committed.

Everything that can be checked before decoding is (version, features, dimensions, cameras, tasks,
every parquet file, every MP4's header); a store this run created is removed again if a damaged file
stops it later, so a failed import leaves no store behind.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer
import zarr
from tqdm import tqdm

from cfgrl.config import Config
from cfgrl.demonstrations import DEMONSTRATION
from cfgrl.errors import CfgrlError
from cfgrl.lerobot_data.dataset import (ACTION, STATE, Dataset, camera_map, check_cameras, check_feature, episode_rows,
                                        read_parquet, stacked)
from cfgrl.lerobot_data.video import VideoFile, decode_image, probe
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter, writer_lock

UNKNOWN_INIT_STATE = -1
COMMIT_BYTES = 32 * 2**20  # frames an import commits at the latest: ~0.3 s of compression


@dataclass
class Plan:
    """What an import will write: the dataset episodes to import, with their suite task ids."""

    dataset: Dataset
    cameras: dict[str, str]  # dataset key -> env camera
    task_of: dict[int, Any]  # dataset episode index -> the env's TaskInfo
    skipped: dict[str, int] = field(default_factory=dict)  # task string of another suite -> episodes


def normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def plan_import(cfg: Config, dataset: Dataset, env_cameras: tuple[str, ...], env_tasks: tuple, camera_items: list[str] | None,
                strict: bool, success_column: str | None) -> Plan:
    """Every check that needs no decoding, in the order a user would fix them."""
    from cfgrl.envs import ACTION_DIM, STATE_DIM

    check_feature(dataset, STATE, STATE_DIM, "state")
    check_feature(dataset, ACTION, ACTION_DIM, "action")
    cameras = camera_map(camera_items, env_cameras)
    check_cameras(dataset, cameras, env_cameras)
    cameras = {k: c for k, c in cameras.items() if c in env_cameras}
    if success_column is not None and dataset.features.get(success_column, {}).get("dtype") != "bool":
        raise CfgrlError(f"--success-column '{success_column}' is not a boolean feature of dataset '{dataset.root}'; "
                         f"its boolean features: {', '.join(k for k, f in dataset.features.items() if f.get('dtype') == 'bool') or 'none'}")
    by_prompt = {normalise(t.prompt): t for t in env_tasks}
    plan = Plan(dataset, cameras, {})
    for _, episode in dataset.episodes.iterrows():
        tasks = list(episode["tasks"])
        task = by_prompt.get(normalise(tasks[0])) if len(tasks) == 1 else None
        if task is None:
            if strict:
                raise CfgrlError(f"dataset episode {int(episode['episode_index'])}'s task {tasks} is not a task of suite "
                                 f"{cfg.env.name}/{cfg.env.suite} (its tasks: {'; '.join(t.prompt for t in env_tasks)}); "
                                 "drop --strict to skip such episodes, or import with the suite they belong to")
            plan.skipped[" + ".join(tasks)] = plan.skipped.get(" + ".join(tasks), 0) + 1
            continue
        plan.task_of[int(episode["episode_index"])] = task
    if not plan.task_of:
        raise CfgrlError(f"no episode of dataset '{dataset.root}' has a task of suite {cfg.env.name}/{cfg.env.suite} "
                         f"(the dataset's tasks: {'; '.join(sorted(plan.skipped))}; the suite's: "
                         f"{'; '.join(t.prompt for t in env_tasks)}); choose the environment with -c and the suite with --suite")
    for _, episode in selected(plan).iterrows():
        for key in (k for k in cameras if dataset.is_video(k)):
            probe(dataset.video_file(episode, key))
    return plan


def selected(plan: Plan) -> pd.DataFrame:
    episodes = plan.dataset.episodes
    return episodes[episodes.episode_index.isin(list(plan.task_of))]


def import_run_id(cfg: Config, plan: Plan, success_column: str | None) -> str:
    from cfgrl.rollout.specs import run_id

    return run_id(stage="import", source="lerobot", info_sha256=plan.dataset.info_sha256, env=cfg.env.name, suite=cfg.env.suite,
                  image_size=cfg.env.image_size, replan_steps=cfg.inference.replan_steps, cameras=plan.cameras,
                  success_column=success_column)


def import_dataset(cfg: Config, store: Path, dataset_dir: Path, camera_items: list[str] | None = None,
                   strict: bool = False, success_column: str | None = None, threads: int = 1) -> int:
    """Import every missing episode of ``dataset_dir`` into ``store``; returns how many were imported."""
    from cfgrl.rollout.plan import env_info

    dataset = Dataset.open(dataset_dir)
    info = env_info(cfg.env)
    plan = plan_import(cfg, dataset, info.camera_names, info.tasks, camera_items, strict, success_column)
    from cfgrl.envs import ACTION_DIM, STATE_DIM

    size = cfg.env.image_size
    layout = StoreLayout(info.camera_names, (size, size, 3), STATE_DIM, ACTION_DIM)
    if store.exists():  # another writer, layout or schema fails here, before anything is decoded
        writer_lock(store).release()
        existing = Store(store)
        existing.require_layout(layout)
        existing.require_replan_steps(cfg.inference.replan_steps)
    created = not store.exists()
    run = import_run_id(cfg, plan, success_column)
    try:
        with StoreWriter(store, layout, cfg.collect.commit_seconds) as writer:
            committed = Store(store).episodes
            done = set(committed.group_id[committed.run_id == run].astype(int))
            todo = selected(plan)[lambda e: ~e.episode_index.isin(list(done))]
            skipped = ", ".join(f"{n} of task '{t}'" for t, n in plan.skipped.items())
            typer.echo(f"{store}: {len(plan.task_of)} of {len(dataset.episodes)} episodes of '{dataset_dir}' are in suite "
                       f"{cfg.env.suite}, {len(done)} already imported, {len(todo)} to import"
                       + (f"; skipping {skipped}" if skipped else "") + f" (run {run})")
            Importer(cfg, plan, run, success_column, threads).run(todo, writer)
    except CfgrlError:
        if created:
            discard(store)
        raise
    record_import(store, plan, run)
    return len(todo)


def discard(store: Path) -> None:
    """Remove a store this run created and could not fill (holding its lock: no writer is running)."""
    lock = writer_lock(store)
    try:
        shutil.rmtree(store, ignore_errors=True)
    finally:
        lock.release()


def record_import(store: Path, plan: Plan, run: str) -> None:
    """The root attribute ``imports``: one entry per import run (replaced when a run resumes)."""
    entry = {"source": "lerobot", "dataset": str(plan.dataset.root.absolute()), "info_sha256": plan.dataset.info_sha256,
             "codebase_version": plan.dataset.info.get("codebase_version"), "run_id": run, "cameras": plan.cameras,
             "episodes": sorted(plan.task_of), "skipped_episodes": sum(plan.skipped.values()), "imported": time.time()}
    lock = writer_lock(store)  # attributes are rewritten whole: only the store's one writer may
    try:
        root = zarr.open_group(str(store), mode="r+")
        imports = [e for e in root.attrs.get("imports", []) if e.get("run_id") != run]
        root.attrs.update({"imports": [*imports, entry], "demonstrations": True})
    finally:
        lock.release()


class Importer:
    """Decodes the planned episodes, data file by data file, and hands each to the store writer."""

    def __init__(self, cfg: Config, plan: Plan, run: str, success_column: str | None, threads: int):
        self.cfg, self.plan, self.run_id, self.success_column, self.threads = cfg, plan, run, success_column, threads
        self.replan, self.size = cfg.inference.replan_steps, cfg.env.image_size
        self.videos: dict[Path, VideoFile] = {}

    def run(self, todo: pd.DataFrame, writer: StoreWriter) -> None:
        """Decode in one background thread while this one writes: PyAV and zarr's compression release the
        GIL, so the store's commits overlap the decoding instead of adding to it. Commits go by size as
        well as by ``collect.commit_seconds``: compressing the frames is most of a commit, and one left for
        ``close`` (all of a short import's) overlaps nothing (bench/lerobot_import.py)."""
        if todo.empty:
            return
        ready: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        decoder = threading.Thread(target=self._produce, args=(todo, ready, stop), daemon=True)
        decoder.start()
        bar = tqdm(total=int(todo.length.sum()), unit="frame", desc="import", dynamic_ncols=True)
        buffered = 0
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                writer.append(item)
                buffered += sum(frames.nbytes for frames in item.frames.values())
                if buffered >= COMMIT_BYTES:
                    writer.flush()
                    buffered = 0
                bar.update(item.length)
        finally:
            stop.set()
            bar.close()
            decoder.join()

    def _produce(self, todo: pd.DataFrame, ready: queue.Queue, stop: threading.Event) -> None:
        dataset = self.plan.dataset

        def put(item: object) -> None:
            while not stop.is_set():
                try:
                    return ready.put(item, timeout=0.1)
                except queue.Full:
                    continue

        try:
            for data_file, episodes in todo.groupby(todo.apply(dataset.data_file, axis=1), sort=False):
                table = read_parquet(data_file)
                for _, episode in episodes.iterrows():
                    if stop.is_set():
                        return
                    put(self.episode(episode, episode_rows(dataset, episode, table)))
            put(None)
        except BaseException as exc:  # handed to the writing thread, which raises it
            put(exc)
        finally:
            for video in self.videos.values():
                video.close()

    def episode(self, episode: pd.Series, rows: pd.DataFrame) -> EpisodeData:
        length, index = len(rows), int(episode["episode_index"])
        steps = np.arange(0, length, self.replan)  # the query steps: frames are stored there only
        success = bool(np.asarray(rows[self.success_column].iloc[-1]).reshape(-1)[0]) if self.success_column else True
        reward, done = np.zeros(length, np.float32), np.zeros(length, bool)
        reward[-1], done[-1] = float(success), success
        task = self.plan.task_of[index]
        meta = dict(num_wait_steps=0, task_id=task.task_id, init_state_id=UNKNOWN_INIT_STATE, group_id=index, rollout_index=0,
                    seed=index, success=success, cfg_scale=0.0, env=self.cfg.env.name, suite=self.cfg.env.suite,
                    prompt=task.prompt, policy_id=DEMONSTRATION, run_id=self.run_id, renderer="lerobot", init_config="[]")
        return EpisodeData(state=stacked(rows, STATE), action=stacked(rows, ACTION), reward=reward, done=done,
                           is_wait=np.zeros(length, bool), frames={camera: self.camera(key, episode, rows, steps)
                                                                   for key, camera in self.plan.cameras.items()},
                           frame_step=steps, meta=meta)

    def camera(self, key: str, episode: pd.Series, rows: pd.DataFrame, steps: np.ndarray) -> np.ndarray:
        dataset = self.plan.dataset
        if not dataset.is_video(key):
            where = f"dataset '{dataset.root}' episode {int(episode['episode_index'])} camera '{key}'"
            return np.stack([decode_image(rows[key].iloc[s], where, self.size) for s in steps])
        path = dataset.video_file(episode, key)
        if path not in self.videos:
            self.videos[path] = VideoFile(path, dataset.fps, self.threads)
        return self.videos[path].frames(float(episode[f"videos/{key}/from_timestamp"]), len(rows), steps, self.size)


def summary(store: Path) -> str:
    s = Store(store)
    ep = s.episodes
    return (f"'{store}' now holds {s.num_episodes} episodes ({int(ep.success.sum())} successful), "
            f"{s.num_steps} steps, {s.num_frames} frames per camera; imports: "
            + json.dumps([{k: e[k] for k in ('dataset', 'run_id')} for e in s.attrs.get('imports', [])]))
