"""From stores to the window table: windows -> advantages -> labels -> condition dropout.

Only the episode table, ``steps/reward`` and ``frames/step`` are read (never an image; ``value`` reads
the value model's V per frame instead), so the cost of relabelling does not grow with image bytes.
Every step is vectorised over all windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cfgrl.config import Config, CFGRLConfig, validate
from cfgrl.demonstrations import is_demonstration
from cfgrl.errors import CfgrlError
from cfgrl.label.advantage import (GROUP_RELATIVE, RECAP_QUANTILE, Groups, StoreValues, default_threshold, estimate,
                                   per_task_thresholds, value_advantage)
from cfgrl.label.labels import binary_labels, condition_dropout, ternary_labels
from cfgrl.label.windows import DEFAULT_HORIZON, StoreData, make_windows, resolve_stride
from cfgrl.optimality import Label, from_stored

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


def resolve_settings(cfg: CFGRLConfig, replan_steps: int, horizon: int = DEFAULT_HORIZON, value_model: str | None = None) -> dict[str, Any]:
    """The effective labelling settings (they name the version): defaults resolved, and the ones
    that do not apply to the source set to null, so they cannot split one labelling into two.
    ``value_model``: the id of the value model given with ``--value``."""
    validate(Config(cfgrl=cfg))  # the same one-line messages as the config loader
    source = cfg.label_source
    value = source == "value"
    if value and value_model is None:
        raise CfgrlError("cfgrl.label_source=value needs a value model: give --value DIR, a directory written by `cfgrl value STORE... --out DIR`")
    if not value and value_model is not None:
        raise CfgrlError(f"--value is given but cfgrl.label_source is {source}; add -o cfgrl.label_source=value, or drop --value")
    quantile = cfg.label_quantile
    if quantile is None and value and cfg.label_threshold is None:
        quantile = RECAP_QUANTILE
    threshold = cfg.label_threshold if cfg.label_threshold is not None else default_threshold(source, cfg.window_return_reduce, horizon)
    return {
        "label_source": source,
        "label_scheme": cfg.label_scheme,
        "label_threshold": None if source == "none" or quantile is not None else threshold,
        "label_quantile": None if source == "none" else quantile,
        "zero_variance_groups": None if value else cfg.zero_variance_groups,
        "window_return_reduce": cfg.window_return_reduce if source == "window_return" else None,
        "value_model": value_model,
        "value_horizon": resolve_value_horizon(cfg.value_horizon, replan_steps, horizon) if value else None,
        "window_stride": resolve_stride(cfg.window_stride, replan_steps),
        "replan_steps": replan_steps,
        "horizon": horizon,
        "dropout_prob": cfg.dropout_prob,
        "seed": cfg.seed,
        # named only when not at its default, so the versions made before the setting keep their ids
        **({"failed_episodes": "drop"} if cfg.failed_episodes == "drop" else {}),
        **({"demonstrations": "unconditional"} if cfg.demonstrations == "unconditional" else {}),
    }


def resolve_value_horizon(value_horizon: int | None, replan_steps: int, horizon: int) -> int:
    """N of the N-step advantage: the window length unless set; V(o_{t+N}) needs a stored frame at t + N."""
    n = horizon if value_horizon is None else value_horizon
    if n < 1 or n % replan_steps:
        raise CfgrlError(f"cfgrl.value_horizon={n} must be a positive multiple of inference.replan_steps="
                         f"{replan_steps} (V is known only at the query steps, where frames are stored); null means the "
                         f"window length, {horizon}")
    return n


def _check_baseline(data: StoreData, groups: Groups, source: str, demonstrations: np.ndarray) -> None:
    """Refuse a rollout store of groups of one; a demonstration (its own group of one) needs no baseline."""
    rollouts = groups.size[~demonstrations]
    if source in GROUP_RELATIVE and len(rollouts) and (rollouts == 1).all():
        raise CfgrlError(
            f"store '{data.path}': every group holds one rollout (an evaluation store, episodes_per_init 1?), so "
            f"cfgrl.label_source={source} has no leave-one-out baseline for any window; label it with "
            "cfgrl.label_source=window_return or cfgrl.label_source=none, or collect groups of K >= 2 rollouts"
        )


def _store_windows(data: StoreData, index: int, settings: dict[str, Any],
                   values: StoreValues | None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The windows of one store with their advantage and three per-window flags of their group:
    zero variance (never for ``value``, which needs no group), every rollout succeeded, a single rollout."""
    source = settings["label_source"]
    windows = make_windows(data, settings["window_stride"], settings["replan_steps"], settings["horizon"])
    groups = Groups.of(data)
    demo = np.zeros(len(groups.size), bool)
    demo[groups.code[is_demonstration(data.episodes)]] = True  # imported: one group each, labelled by cfgrl.demonstrations
    _check_baseline(data, groups, source, demo)
    single = (groups.size == 1) & ~demo
    if values is not None:
        zero_variance = np.zeros(len(groups.size), bool)  # value compares each window with V, not with the group
        advantage = value_advantage(windows, data, values, settings["value_horizon"])
    else:
        zero_variance = groups.zero_variance(data)
        if source not in GROUP_RELATIVE:
            zero_variance &= ~single  # one rollout has no spread to measure, and window_return needs no baseline
        with np.errstate(divide="ignore", invalid="ignore"):  # a demonstration's group of one: its A is set to NaN below
            advantage = estimate(source, windows, data, groups, settings["window_return_reduce"])
    zero_variance &= ~demo
    advantage = np.where(demo[groups.code[windows.episode]], np.nan, advantage)
    succeeded = groups.all_succeeded(data)
    group = groups.code[windows.episode]
    columns = {
        "store": np.full(len(windows), index, np.int16),
        "episode": windows.episode,
        "start": windows.start.astype(np.int32),
        "num_valid": windows.num_valid.astype(np.int16),
        "frame": windows.frame,
        "task_id": data.column("task_id", "int32")[windows.episode],
        "group_id": data.column("group_id")[windows.episode],
        "advantage": advantage,
        "zero_variance": zero_variance[group],
        "all_succeeded": succeeded[group],
        "single_rollout": single[group],
        "failed": ~data.column("success", "bool")[windows.episode],
        "demonstration": demo[group],
    }
    counts = {"episodes": len(data.episodes), "groups": len(groups.size), "zero_variance_groups": int(zero_variance.sum()),
              "all_success_groups": int((zero_variance & succeeded).sum()),
              "single_rollout_groups": int(single.sum()), "single_rollout_windows": int(single[group].sum())}
    return columns, counts


def optimality_labels(advantage: np.ndarray, zero_variance: np.ndarray, all_succeeded: np.ndarray,
                      settings: dict[str, Any], threshold: np.ndarray | float | None = None) -> pd.arrays.IntegerArray:
    """The raw label o of each window: 1 if A_w >= threshold (``threshold``: per window, from the
    per-task quantiles; else ``label_threshold``), else ∅ (binary) or 0 (ternary);
    ∅ everywhere for label_source none. The windows of zero-variance groups get ∅ by default. Under
    ``keep`` the group-relative sources label them by their group's outcome, o = 1 if every rollout
    succeeded, else ∅ (binary) or 0 (ternary): their A = 0 there compares the rollout with copies of
    itself, and would reach the default threshold 0 even for failures. window_return keeps its own
    estimate, which never looks at the group."""
    if settings["label_source"] == "none":
        return binary_labels(np.full(len(advantage), np.nan), 0.0)  # plain behaviour cloning
    to_labels = ternary_labels if settings["label_scheme"] == "ternary" else binary_labels
    raw = to_labels(advantage, settings["label_threshold"] if threshold is None else threshold)
    if settings["zero_variance_groups"] == "unconditional":
        raw[zero_variance] = pd.NA  # a group with one outcome carries no signal
    elif settings["zero_variance_groups"] == "keep" and settings["label_source"] in GROUP_RELATIVE:
        by_outcome = to_labels(np.where(all_succeeded, 1.0, -1.0), 0.0)
        raw[zero_variance] = by_outcome[zero_variance]
    return raw


def demonstration_labels(raw: pd.arrays.IntegerArray, demonstration: np.ndarray, failed: np.ndarray,
                         settings: dict[str, Any]) -> pd.arrays.IntegerArray:
    """An imported demonstration's windows: under ``optimal`` (RECAP's treatment) o = 1 when it succeeded,
    else as a failure, ∅ (binary) or 0 (ternary); under ``unconditional`` ∅. label_source none: ∅, as every window."""
    if settings["label_source"] == "none" or not demonstration.any():
        return raw
    raw = raw.copy()
    if settings.get("demonstrations", "optimal") == "unconditional":
        raw[demonstration] = pd.NA
        return raw
    to_labels = ternary_labels if settings["label_scheme"] == "ternary" else binary_labels
    by_outcome = to_labels(np.where(failed, -1.0, 1.0), 0.0)
    raw[demonstration] = by_outcome[demonstration]
    return raw


def label_windows(datas: list[StoreData], settings: dict[str, Any],
                  store_values: list[StoreValues] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The window table (columns ``COLUMNS``) and its counts: A_w -> o -> condition dropout.
    ``store_values``: per store, what ``label_source: value`` reads."""
    parts = [_store_windows(data, i, settings, store_values[i] if store_values else None) for i, data in enumerate(datas)]
    columns = {name: np.concatenate([p[name] for p, _ in parts]) for name in parts[0][0]}
    counts: dict[str, Any] = {key: sum(c[key] for _, c in parts) for key in parts[0][1]}
    source = settings["label_source"]
    counts["windows_before_drop"] = len(columns["episode"])
    if counts["windows_before_drop"] == 0:
        raise CfgrlError("the stores hold no window start (no stored observation after the wait steps)")

    if source != "none" and settings["zero_variance_groups"] == "drop":
        columns = {name: values[~columns["zero_variance"]] for name, values in columns.items()}
    if settings.get("failed_episodes") == "drop":  # after the advantages: a success keeps what its group's failures gave it
        counts["failed_windows_dropped"] = int(columns["failed"].sum())
        columns = {name: values[~columns["failed"]] for name, values in columns.items()}
    flags = {name: columns.pop(name) for name in ("zero_variance", "all_succeeded", "single_rollout", "failed", "demonstration")}
    threshold = None
    if settings["label_quantile"] is not None:
        per_task = per_task_thresholds(columns["advantage"], columns["task_id"], settings["label_quantile"])
        counts["threshold_per_task"] = {str(t): v for t, v in per_task.items()}
        threshold = pd.Series(columns["task_id"]).map(per_task).to_numpy(np.float64)
    raw = optimality_labels(columns["advantage"], flags["zero_variance"], flags["all_succeeded"], settings, threshold)
    raw = demonstration_labels(raw, flags["demonstration"], flags["failed"], settings)
    counts["demonstration_windows"] = int(flags["demonstration"].sum())
    if source != "none" and raw.isna().all():
        raise CfgrlError(_why_no_label(columns["advantage"], counts, settings))
    label, hit = condition_dropout(raw, settings["dropout_prob"], np.random.default_rng(settings["seed"]))
    table = pd.DataFrame({**columns, "raw_label": raw, "label": label, "dropout_hit": hit})
    counts.update(_label_counts(table))
    counts["single_rollout_labels"] = _single_rollout_labels(raw, flags["single_rollout"], counts["single_rollout_windows"])
    return table, counts


def _why_no_label(advantage: np.ndarray, counts: dict[str, Any], settings: dict[str, Any]) -> str:
    groups, flat = counts["groups"], counts["zero_variance_groups"]
    if flat == groups:
        success = counts["all_success_groups"]
        # keep labels a failed group ∅ or o=0 (optimality_labels): worth suggesting only when some group succeeded
        how = ("each group labelled by its outcome: all succeeded o=1, all failed ∅ in binary and o=0 in ternary"
               if settings["label_source"] in GROUP_RELATIVE else "window_return's own estimate in every group")
        keep = f"cfgrl.zero_variance_groups=keep ({how}) or " if success and settings["zero_variance_groups"] != "keep" else ""
        return (
            f"no window got a conditioned label: every group had the same outcome ({success} of {groups} all "
            f"succeeded, {groups - success} all failed), so none carries an RLOO signal; collect more varied "
            f"rollouts, or set {keep}cfgrl.label_source=none for plain behaviour cloning"
        )
    top = np.nanmax(advantage) if (~np.isnan(advantage)).any() else float("nan")
    return (
        f"no window got a conditioned label: no advantage reached cfgrl.label_threshold={settings['label_threshold']} "
        f"(largest A_w = {top:.4g} among windows of groups with a signal); lower the threshold or use cfgrl.label_source=none"
    )


def _single_rollout_labels(raw: pd.arrays.IntegerArray, single: np.ndarray, before_drop: int) -> dict[str, int]:
    """What the windows of groups of one rollout became: raw o = 1, 0, ∅, or dropped."""
    labels = raw[single]
    conditioned = ~np.asarray(labels.isna())
    ones = int((labels.to_numpy(np.int8, na_value=0) == 1).sum())
    return {"1": ones, "0": int(conditioned.sum()) - ones, "null": int((~conditioned).sum()), "dropped": before_drop - len(labels)}


def _shares(counts: np.ndarray) -> dict[str, float]:
    """Shares of o = 1, 0, ∅ from counts in that order (Label's order)."""
    n = max(int(counts.sum()), 1)
    return {label.key: counts[i] / n for i, label in enumerate(Label)}


def _label_counts(table: pd.DataFrame) -> dict[str, Any]:
    def classes(labels: pd.Series) -> np.ndarray:  # Label's order: 0: o=1, 1: o=0, 2: ∅
        return int(Label.OPTIMAL) - from_stored(labels)

    tasks, task_index = np.unique(table.task_id.to_numpy(), return_inverse=True)
    per_task = np.bincount(task_index * 3 + classes(table.label), minlength=3 * len(tasks)).reshape(-1, 3)
    conditioned = int(table.raw_label.notna().sum())
    hits = int(table.dropout_hit.sum())
    advantage = table.advantage.to_numpy()
    advantage = advantage[~np.isnan(advantage)]
    return {
        "windows": len(table),
        "raw_label_share": _shares(np.bincount(classes(table.raw_label), minlength=3)),
        "label_share": _shares(per_task.sum(axis=0)),
        "label_share_per_task": {str(t): {"windows": int(c.sum()), **_shares(c)} for t, c in zip(tasks, per_task)},
        "conditioned": conditioned,
        "dropout_hits": hits,
        "dropout_hit_rate": hits / conditioned if conditioned else 0.0,
        "advantage": (
            {"min": float(advantage.min()), "mean": float(advantage.mean()), "max": float(advantage.max())}
            if len(advantage) else None
        ),
    }
