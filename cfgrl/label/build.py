"""From stores to the window table: windows -> advantages -> labels -> condition dropout.

Only the episode table, ``steps/reward`` and ``frames/step`` are read (never an image), so the cost
of relabelling does not grow with image bytes. Every step is vectorised over all windows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from cfgrl.config import Config, CFGRLConfig, validate
from cfgrl.errors import CfgrlError
from cfgrl.label.advantage import Groups, default_threshold, estimate
from cfgrl.label.labels import binary_labels, condition_dropout, ternary_labels
from cfgrl.label.windows import HORIZON, EpisodeRewards, make_windows, resolve_stride
from cfgrl.store import Store

COLUMNS = {
    "store": "int16",
    "episode": "int64",
    "start": "int32",
    "num_valid": "int16",
    "frame": "int64",
    "task_id": "int32",
    "group_id": "int64",
    "advantage": "float64",
    "raw_label": "Int8",
    "label": "Int8",
    "dropout_hit": "bool",
}


def resolve_settings(cfg: CFGRLConfig, replan_steps: int) -> dict[str, Any]:
    """The effective settings (they name the version): defaults resolved, inapplicable ones null."""
    validate(Config(cfgrl=cfg))  # the same one-line messages as the config loader
    settings = dataclasses.asdict(cfg)
    reduce = cfg.window_return_reduce if cfg.label_source == "window_return" else None
    threshold = cfg.label_threshold if cfg.label_threshold is not None else default_threshold(cfg.label_source, cfg.window_return_reduce)
    settings.update(
        label_threshold=None if cfg.label_source == "none" else threshold,
        window_return_reduce=reduce,
        window_stride=resolve_stride(cfg.window_stride, replan_steps),
        replan_steps=replan_steps,
        horizon=HORIZON,
    )
    return settings


def _store_windows(store: Store, index: int, settings: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The windows of one store with their advantage and whether their group has zero variance."""
    where = f"store '{store.path}'"
    if store.num_episodes == 0:
        raise CfgrlError(f"{where} has no finished episode yet")
    episodes = store.episodes
    windows = make_windows(store, settings["window_stride"], settings["replan_steps"])
    rewards = EpisodeRewards.read(store)
    groups = Groups.of(episodes, where)
    advantage = estimate(settings["label_source"], windows, rewards, groups, settings["window_return_reduce"])
    zero_variance = groups.zero_variance(rewards)
    table = pd.DataFrame(
        {
            "store": np.full(len(windows), index, np.int16),
            "episode": windows.episode,
            "start": windows.start,
            "num_valid": windows.num_valid,
            "frame": windows.frame,
            "task_id": episodes.task_id.to_numpy(np.int32)[windows.episode],
            "group_id": episodes.group_id.to_numpy(np.int64)[windows.episode],
            "advantage": advantage,
            "zero_variance": zero_variance[groups.code[windows.episode]],
        }
    )
    counts = {"episodes": len(episodes), "groups": len(groups.size), "zero_variance_groups": int(zero_variance.sum()),
              "all_success_groups": int((zero_variance & _group_success(groups, rewards)).sum())}
    return table, counts


def _group_success(groups: Groups, rewards: EpisodeRewards) -> np.ndarray:
    return np.bincount(groups.code, weights=rewards.success) == groups.size


def label_windows(stores: list[Store], settings: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The window table (columns ``COLUMNS``) and its counts."""
    parts = [_store_windows(store, i, settings) for i, store in enumerate(stores)]
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    counts: dict[str, Any] = {key: sum(c[key] for _, c in parts) for key in parts[0][1]}
    source, policy = settings["label_source"], settings["zero_variance_groups"]
    counts["windows_before_drop"] = len(table)
    if len(table) == 0:
        raise CfgrlError("the stores hold no window start (no stored observation after the wait steps)")

    if source != "none" and policy == "drop":
        table = table[~table.zero_variance.to_numpy()].reset_index(drop=True)
    to_labels = ternary_labels if settings["label_scheme"] == "ternary" else binary_labels
    if source == "none":
        raw = to_labels(np.full(len(table), np.nan), 0.0)  # every window ∅: plain behaviour cloning
    else:
        raw = to_labels(table.advantage.to_numpy(), settings["label_threshold"])
        if policy == "unconditional":
            raw[table.zero_variance.to_numpy()] = pd.NA  # a group with one outcome carries no signal
    if source != "none" and raw.isna().all():
        raise CfgrlError(_why_no_label(table, counts, settings))
    label, hit = condition_dropout(raw, settings["dropout_prob"], np.random.default_rng(settings["seed"]))
    table["raw_label"], table["label"], table["dropout_hit"] = raw, label, hit
    table = table.drop(columns="zero_variance").astype(COLUMNS)
    counts.update(_label_counts(table))
    return table, counts


def _why_no_label(table: pd.DataFrame, counts: dict[str, Any], settings: dict[str, Any]) -> str:
    groups, flat = counts["groups"], counts["zero_variance_groups"]
    if flat == groups and settings["zero_variance_groups"] != "keep":
        success = counts["all_success_groups"]
        return (
            f"no window got a conditioned label: every group had the same outcome ({success} of {groups} all "
            f"succeeded, {groups - success} all failed), so none carries an RLOO signal; collect more varied "
            "rollouts, or set cfgrl.zero_variance_groups=keep, or cfgrl.label_source=none for plain behaviour cloning"
        )
    top = np.nanmax(table.advantage.to_numpy()) if table.advantage.notna().any() else float("nan")
    return (
        f"no window got a conditioned label: no advantage reached cfgrl.label_threshold={settings['label_threshold']} "
        f"(largest A_w = {top:.4g} among windows of groups with a signal); lower the threshold or use cfgrl.label_source=none"
    )


def _shares(labels: pd.Series) -> dict[str, float]:
    n = max(len(labels), 1)
    return {
        "1": float((labels == 1).sum()) / n,
        "0": float((labels == 0).sum()) / n,
        "null": float(labels.isna().sum()) / n,
    }


def _label_counts(table: pd.DataFrame) -> dict[str, Any]:
    conditioned = int(table.raw_label.notna().sum())
    hits = int(table.dropout_hit.sum())
    per_task = {
        str(task): {"windows": len(rows), **_shares(rows.label)} for task, rows in table.groupby("task_id", sort=True)
    }
    advantage = table.advantage.dropna()
    return {
        "windows": len(table),
        "raw_label_share": _shares(table.raw_label),
        "label_share": _shares(table.label),
        "label_share_per_task": per_task,
        "conditioned": conditioned,
        "dropout_hits": hits,
        "dropout_hit_rate": hits / conditioned if conditioned else 0.0,
        "advantage": (
            {"min": float(advantage.min()), "mean": float(advantage.mean()), "max": float(advantage.max())}
            if len(advantage) else None
        ),
    }
