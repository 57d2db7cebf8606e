"""`cfgrl round`: one CFGRL improvement round, repeatable.

Round k starts from the latest checkpoint (round k-1's trained policy, or ``--policy`` for round 1)
and the guidance weight round k-1's evaluation chose on validation init states (w = 1 in round 1),
then:

    collect  ROOT/round_k/rollouts.zarr   K rollouts per init state from that one policy and w
    label    its own fresh store (+ the stores of the previous ``keep_stores`` rounds, + ``with_stores``,
             e.g. the base's demonstrations); groups never mix policies because each store holds one
             policy's rollouts
    train    from that checkpoint -> ROOT/round_k/train/policy
    evaluate the w sweep against the starting checkpoint at the w it collected with -> ROOT/round_k/eval

``ROOT/round_k/round.json`` is written last: a round without it is unfinished and the next
``cfgrl round`` resumes it (every stage resumes or skips finished work).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfgrl import atomic, provenance
from cfgrl.config import Config, with_overrides
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import require_validation
from cfgrl.pipeline import stages
from cfgrl.schemas import ROUND

FIRST_ROUND_CFG_SCALE = 1.0


@dataclass(frozen=True)
class RoundDir:
    root: Path
    number: int

    @property
    def path(self) -> Path:
        return self.root / f"round_{self.number:03d}"

    store = property(lambda self: self.path / "rollouts.zarr")
    labels = property(lambda self: self.path / "labels")
    train = property(lambda self: self.path / "train")
    policy = property(lambda self: self.path / "train" / "policy")
    eval = property(lambda self: self.path / "eval")
    record = property(lambda self: self.path / "round.json")


def read_record(round_dir: RoundDir) -> dict[str, Any]:
    record = json.loads(round_dir.record.read_text())
    ROUND.check(record, str(round_dir.record))
    return record


def finished_rounds(root: Path) -> list[RoundDir]:
    found = sorted(int(p.name.split("_")[1]) for p in root.glob("round_*") if (p / "round.json").is_file())
    return [RoundDir(root, k) for k in found]


def policy_id_of(policy_dir: Path) -> str:
    meta = json.loads((Path(policy_dir) / "config.json").read_text())
    return meta.get("policy_id", "?")


def run_round(cfg: Config, root: Path, base_policy: Path | None, keep_stores: int = 0, number: int | None = None,
              with_stores: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Run (or resume) the next round under ``root`` and return its record; with ``number``, that
    round only: its record when it is finished already (a rerun of a demo repeats no round).
    ``with_stores`` are labelled and trained on beside the round's own store (the base's
    demonstrations keep the fine-tuned policy near what the base learnt from)."""
    require_validation(cfg, "cfgrl round")  # before any work: the next round collects at the chosen w
    from cfgrl.store import Store

    for extra in with_stores:
        Store(extra)  # one clear line for a missing or foreign store, before any work
    done = finished_rounds(root)
    if number is not None and number in [r.number for r in done]:
        return read_record(RoundDir(root, number))
    current = RoundDir(root, done[-1].number + 1 if done else 1)
    if number is not None and current.number != number:
        raise CfgrlError(f"'{root}' holds {len(done)} finished rounds; round {number} cannot run next (round {current.number} would)")
    if done:
        previous = read_record(done[-1])
        start, cfg_scale = Path(previous["policy_out"]), float(previous["chosen_cfg_scale"])
    else:
        if base_policy is None:
            raise CfgrlError("the first round needs a starting checkpoint: pass --policy DIR")
        start, cfg_scale = Path(base_policy), FIRST_ROUND_CFG_SCALE
    if not (start / "config.json").is_file():
        raise CfgrlError(f"'{start}' is not a policy checkpoint (no config.json)")
    print(f"round {current.number}: from {start} (policy {policy_id_of(start)}), collecting at w={cfg_scale:g}")

    stages.collect(with_overrides(cfg, [f"inference.cfg_scale={cfg_scale}"]), current.store, start)
    earlier = [RoundDir(root, r.number).store for r in done[::-1][:keep_stores]]
    stores = [current.store, *earlier, *with_stores]
    labels = stages.label(cfg, stores, current.labels, start)
    policy = stages.train(cfg, stores, labels, current.train, start)
    # The starting checkpoint runs as it collected: at its chosen w (a base ignores w).
    results = stages.evaluate(cfg, policy, current.eval, baseline=start, baseline_cfg_scale=cfg_scale)

    from cfgrl.evaluate import chosen_cfg_scale

    chosen = chosen_cfg_scale(results, "cfgrl round")
    record = {
        **ROUND.stamp(),
        "round": current.number,
        "policy_in": str(start), "policy_in_id": policy_id_of(start),
        "collect_cfg_scale": cfg_scale,
        "stores": [str(s) for s in stores],
        "label_version": str(labels),
        "policy_out": str(policy), "policy_out_id": policy_id_of(policy),
        "eval": str(current.eval),
        "chosen_cfg_scale": chosen,
        "chosen_on": results["chosen_on"],
        "overall_success": _overall(results),
        "provenance": provenance.record(),
    }
    atomic.write_text(current.record, json.dumps(record, indent=2) + "\n")
    print(f"round {current.number} done: w = {chosen:g} chosen on validation; record {current.record}")
    return record


def _overall(results: dict[str, Any]) -> dict[str, float]:
    """Overall test success per arm ("w=1.5", "baseline") from an evaluation's rows."""
    from cfgrl.evaluate import overall_rows

    return {row["arm"]: row["success_rate"] for row in overall_rows(results)}


def lineage(root: Path) -> str:
    """The chain of policies and data across rounds, for `cfgrl inspect`."""
    lines = []
    for rd in finished_rounds(root):
        r = read_record(rd)
        lines.append(
            f"round {r['round']}: policy {r['policy_in_id']} --collect w={r['collect_cfg_scale']:g}--> "
            f"{', '.join(Path(s).name for s in r['stores'])} --label {Path(r['label_version']).name}--> "
            f"policy {r['policy_out_id']} (w {r['chosen_cfg_scale']:g} chosen on validation)"
        )
    return "\n".join(lines) if lines else f"no finished round under {root}"
