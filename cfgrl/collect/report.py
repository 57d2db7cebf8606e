"""What `cfgrl inspect STORE` prints: a store's episodes, steps, success per task, size, schema, policies."""

from __future__ import annotations

from pathlib import Path


def store_summary(path: Path) -> str:
    from cfgrl.store import Store

    s = Store(path)
    ep = s.episodes
    h, w, _ = s.layout.image_shape
    lines = [
        f"store: {s.path}",
        f"schema: {s.attrs['schema']} version {s.attrs['schema_version']}",
        f"size on disk: {s.size_bytes() / 2**20:.1f} MiB",
        f"episodes: {len(ep)}   steps: {s.num_steps} (wait steps {int(ep.num_wait_steps.sum()) if len(ep) else 0})   "
        f"frames: {s.num_frames} per camera   cameras: {', '.join(s.layout.camera_names)} ({h}x{w})",
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
    return "\n".join(lines)
