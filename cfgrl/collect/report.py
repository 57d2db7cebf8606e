"""What `cfgrl inspect STORE` prints: a store's episodes, steps, success per task, size, schema, policies,
and per run the (task, init state) table that adaptive collection plans from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def store_summary(path: Path, patience: int, verify: bool = False) -> str:
    """``patience``: collect.adaptive_patience, which decides the table's "skipped" column; ``verify``:
    decode every committed chunk first (opening the store only checks that each exists)."""
    from cfgrl.store import Store

    s = Store(path)
    verified = [f"verified: every committed chunk of the {s.verify()} arrays decodes"] if verify else []
    ep = s.episodes
    h, w, _ = s.layout.image_shape
    lines = [
        f"store: {s.path}",
        f"schema: {s.attrs['schema']} version {s.attrs['schema_version']}",
        f"size on disk: {s.size_bytes() / 2**20:.1f} MiB",
        f"episodes: {len(ep)}   steps: {s.num_steps} (wait steps {int(ep.num_wait_steps.sum()) if len(ep) else 0})   "
        f"frames: {s.num_frames} per camera   cameras: {', '.join(s.layout.camera_names)} ({h}x{w})",
        *verified,
    ]
    if len(ep):
        lines.append(f"success: {int(ep.success.sum())}/{len(ep)} ({ep.success.mean():.1%})")
        lines.append("per task:")
        by_task = ep.groupby(["env", "suite", "task_id", "prompt"]).success.agg(["count", "sum", "mean"])
        for (env, suite, task, prompt), row in by_task.iterrows():
            lines.append(f"  {env}/{suite} task {task:<3} {prompt!r:<40} {int(row['count']):>6} episodes  success {row['mean']:.1%}")
        lines.append("policies:")
        by_policy = ep.groupby(["policy_id", "cfg_scale"]).agg(
            episodes=("success", "count"), success=("success", "mean"), runs=("run_id", "nunique"),
            groups=("group_id", "nunique"), renderer=("renderer", "first"))
        for (pid, w_), row in by_policy.iterrows():
            lines.append(f"  {pid}  cfg_scale {w_:g}: {row.episodes} episodes in {row.groups} groups, "
                         f"success {row.success:.1%}, {row.runs} run(s), renderer {row.renderer}")
        for run, episodes in ep.groupby("run_id"):
            lines += pair_table(run, episodes, patience)
    return "\n".join(lines)


def pair_table(run: str, episodes: pd.DataFrame, patience: int) -> list[str]:
    """One run's (task, init state) pairs: complete groups, successes, mixed groups, the last group's
    outcome, and whether adaptive collection skips the pair under ``patience``."""
    from cfgrl.rollout.waves import MIXED, histories

    k = int(episodes.groupby("group_id").size().max())  # K: a killed run may leave a group short, not long
    table = histories(episodes, k)
    skipped = sum(h.skipped(patience) for h in table.values())
    groups = sum(len(h.successes) for h in table.values())
    mixed = sum(h.mixed for h in table.values())
    lines = [f"run {run}: {len(table)} (task, init state) pairs, {groups} complete groups of K={k}, {mixed} mixed; "
             f"{skipped} pairs skipped (last {patience} groups all succeeded, or all failed)",
             f"  {'task':>4} {'init':>5} {'groups':>9} {'successes':>10} {'mixed':>6}  {'last group':<12} skipped"]
    for (task, init), h in sorted(table.items()):
        count = f"{len(h.successes)}" + (f"+{len(h.unfinished)}" if h.unfinished else "")
        last = "-" if not h.successes else "mixed" if h.priority == MIXED else "all success" if h.successes[-1] else "all failure"
        wins = f"{sum(h.successes)}/{len(h.successes) * k}"
        lines.append(f"  {task:>4} {init:>5} {count:>9} {wins:>10} {h.mixed:>6}  "
                     f"{last:<12} {'yes' if h.skipped(patience) else 'no'}")
    if any(h.unfinished for h in table.values()):
        lines.append("  (+N: started groups not yet whole, which a resumed collection finishes)")
    return lines
