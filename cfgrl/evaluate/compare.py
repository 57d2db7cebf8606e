"""Two evaluations compared on the same test episodes: A's success minus B's, paired.

Arms of one evaluation are paired inside ``results.json`` (``diff_vs_w1``). Two trained policies
(CFGRL against filtered BC, one ablation setting against the defaults) live in two evaluations; when
both ran the same test slots (same env settings, ``evaluate.seed`` and init states) their episodes
pair one to one, and the Newcombe interval of the paired difference is far tighter than comparing
two Wilson intervals. Each side is taken at its validation-chosen w unless a w is given. B may also
be an evaluation's baseline arm (the starting checkpoint it ran beside the policy, at its own w).

Only what is comparable is paired: each side's episodes are those of its own plan (its checkpoint and
settings digest, as results.json records them; an episode log keeps the episodes of earlier plans
too), and two evaluations whose outcome-changing settings differ (``plan.outcome_settings``: the
episode length, the sampler's steps, ...) are refused, naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Any

from cfgrl.config import config_from_dict
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.ledger import read_committed
from cfgrl.evaluate.plan import BASELINE, POLICY, TEST, differing_settings, settings_digest
from cfgrl.evaluate.stats import PairedDifference, paired_difference
from cfgrl.evaluate.summary import chosen_cfg_scale, load_results

SlotKey = tuple[str, int, int, int, int]  # (suite, task, init state, repeat, episode seed)


@dataclass(frozen=True)
class Comparison:
    a: str
    a_cfg_scale: float
    b: str
    b_cfg_scale: float
    difference: PairedDifference
    b_role: str = POLICY

    def describe(self) -> str:
        d = self.difference
        b = f"{self.b}'s baseline" if self.b_role == BASELINE else self.b
        return (f"{self.a} (w={self.a_cfg_scale:g}) minus {b} (w={self.b_cfg_scale:g}): {d.diff:+.1%} "
                f"(95% CI {d.low:+.1%}, {d.high:+.1%}) over {d.n} paired test episodes")


def test_outcomes(eval_dir: str | Path, cfg_scale: float, role: str = POLICY, results: dict[str, Any] | None = None) -> dict[SlotKey, bool]:
    """Success of every test episode of the evaluation's own plan that ``role`` ran at ``cfg_scale``."""
    results = load_results(eval_dir) if results is None else results
    records = read_committed(Path(eval_dir) / "episodes.jsonl").values()
    checkpoint, settings = _plan_keys(results, records, eval_dir, role)
    outcomes = {(r["suite"], r["task_id"], r["init_state_id"], r["repeat"], r["seed"]): bool(r["success"])
                for r in records if r["role"] == role and r["split"] == TEST and r["cfg_scale"] == cfg_scale
                and r["checkpoint"] == checkpoint and _settings_of(r) == settings}
    if not outcomes:
        raise CfgrlError(f"evaluation '{eval_dir}' holds no test episode at w={cfg_scale:g}; give a w it swept")
    return outcomes


def _settings_of(record: dict[str, Any]) -> str:
    return record["key"].split("|")[1]  # plan.episode_key: checkpoint|settings|...


def _plan_keys(results: dict[str, Any], records, eval_dir: str | Path, role: str) -> tuple[str | None, str]:
    """(checkpoint fingerprint, settings digest) of the role in the evaluation's plan. results.json
    written before it recorded them: the digest from its configuration, the checkpoint if only one ran."""
    settings = results.get("settings_digest") or settings_digest(config_from_dict(results["config"]))
    if "checkpoints" in results:
        return results["checkpoints"].get(role), settings
    ran = {r["checkpoint"] for r in records if r["role"] == role and _settings_of(r) == settings}
    if len(ran) > 1:
        raise CfgrlError(f"the episode log of '{eval_dir}' holds {len(ran)} checkpoints for its {role} and its results.json "
                         "predates the record of which one it reports; run its evaluate command again (it reuses every episode)")
    return (ran.pop() if ran else None), settings


def compare_evaluations(a_dir: str | Path, b_dir: str | Path, a_cfg_scale: float | None = None,
                        b_cfg_scale: float | None = None, b_baseline: bool = False) -> Comparison:
    """A minus B on their common test slots; each at its validation-chosen w unless given, B's
    baseline arm at the w it ran with ``b_baseline``."""
    a_results, b_results = load_results(a_dir), load_results(b_dir)
    differ = differing_settings(config_from_dict(a_results["config"]), config_from_dict(b_results["config"]))
    if differ:
        raise CfgrlError(f"evaluations '{a_dir}' and '{b_dir}' ran under other outcome-changing settings: {'; '.join(differ)}; "
                         "their episodes do not pair: evaluate both with the same settings")
    a_w = chosen_cfg_scale(a_results, "cfgrl compare") if a_cfg_scale is None else a_cfg_scale
    if b_baseline:
        if b_cfg_scale is not None:
            raise CfgrlError("--w-b and --b-baseline are both set; the baseline arm ran at one w, its own: drop --w-b")
        b_w, b_role = b_results.get("baseline_cfg_scale"), BASELINE
        if b_w is None:
            raise CfgrlError(f"evaluation '{b_dir}' ran no baseline arm; evaluate it with --baseline CHECKPOINT, or drop --b-baseline")
    else:
        b_w = chosen_cfg_scale(b_results, "cfgrl compare") if b_cfg_scale is None else b_cfg_scale
        b_role = POLICY
    a, b = test_outcomes(a_dir, a_w, results=a_results), test_outcomes(b_dir, b_w, b_role, b_results)
    if a.keys() != b.keys():
        only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        raise CfgrlError(f"evaluations '{a_dir}' and '{b_dir}' ran different test episodes ({only_a} only in the first, {only_b} only "
                         "in the second); evaluate both with the same env, evaluate.seed and init states")
    slots = sorted(a)
    difference = paired_difference([a[s] for s in slots], [b[s] for s in slots])
    return Comparison(str(a_dir), a_w, str(b_dir), b_w, difference, b_role)
