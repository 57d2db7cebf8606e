"""Splits that cannot overlap: validation against test, and both against what the policy trained on.

A guidance weight chosen on episodes the policy trained on, or on the test episodes it is reported
on, is not a result. Before any episode runs, ``check_splits`` compares the plan's validation and test
(suite, task, init state) triples with each other and with the policy's training triples, and refuses
a plan whose validation meets either. The statement results.json makes about the splits is the
record of these checks, never assumed.

The training triples come from the checkpoint's lineage: a cfgrl checkpoint's
``training_state/trainer.json`` names its label index, whose windows name the episodes trained on;
its ``training_state/config.json`` names the policy it started from, whose own lineage counts too (a
base behaviour-cloned on demonstrations). A lerobot or openpi checkpoint records none of this: its
training overlap is reported as not checkable. Where a store records what an init state id stands
for (``init_config``: Meta-World's configuration vector, which depends on ``env.benchmark_seed``),
two episodes of the same configuration meet even under different ids. An imported demonstration's init state is
unknown (``cfgrl import`` stores id −1): it meets no validation or test triple, and the record counts
such episodes, so a reader knows what could not be compared.

LIBERO's protocol tests on its 50 fixed init states and validates on drawn layouts (ids from 50 up,
whose stores record them as ``init_config``): its overlaps are refused like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import TEST, VALIDATION, Slot
from cfgrl.train.checkpoint import STATE_DIR

Triple = tuple[str, int, int]  # (suite, task id, init state id)
ConfigKey = tuple[str, int, str]  # (suite, task id, init_config as a canonical JSON list)
MAX_LINEAGE = 32  # a chain of fine-tunings longer than this is a cycle of symlinks, not a lineage


@dataclass
class Training:
    """What a checkpoint's lineage trained on, as far as it is recorded."""

    triples: set[Triple] = field(default_factory=set)
    configs: set[ConfigKey] = field(default_factory=set)  # only the non-empty init_configs
    stores: list[str] = field(default_factory=list)
    unknown_init_states: int = 0  # episodes trained on whose init state is not recorded (id -1: imported)
    unchecked: list[str] = field(default_factory=list)  # why (part of) the lineage could not be read


def training_of(policy_dir: str | Path) -> Training:
    """The (suite, task, init state) triples the checkpoint at ``policy_dir`` and its ancestors trained on."""
    found, seen, todo = Training(), set(), [Path(policy_dir)]
    while todo and len(seen) < MAX_LINEAGE:
        ckpt = todo.pop().resolve()
        if ckpt in seen:
            continue
        seen.add(ckpt)
        state = next((d / STATE_DIR for d in (ckpt, ckpt.parent) if (d / STATE_DIR / "trainer.json").is_file()), None)
        if state is None:
            found.unchecked.append(f"'{ckpt}' is not a cfgrl training checkpoint (a lerobot or openpi one records no training data)")
            continue
        trainer, config = _json(state / "trainer.json") or {}, _json(state / "config.json") or {}
        if "label_index" not in trainer:
            found.unchecked.append(f"'{ckpt}' names no label index (trained before checkpoints did, or its trainer.json is unreadable)")
        else:
            _add_label_index(Path(trainer["label_index"]), found)
        source = (config.get("policy") or {}).get("path")
        if source:
            todo.append(Path(source))
    return found


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _add_label_index(version: Path, found: Training) -> None:
    """The triples of every episode with a window in label index ``version``."""
    from cfgrl.label.index import LabelIndex
    from cfgrl.store import Store

    try:
        index = LabelIndex.read(version)
    except CfgrlError as err:
        found.unchecked.append(f"label index '{version}': {err}")
        return
    windows = index.windows[["store", "episode"]].drop_duplicates()
    for number, entry in enumerate(index.manifest["stores"]):
        try:
            episodes = Store(entry["path"]).episodes
        except CfgrlError as err:
            found.unchecked.append(f"training store '{entry['path']}': {err}")
            continue
        found.stores.append(entry["path"])
        trained = episodes.loc[windows.episode[windows.store == number].to_numpy()]
        found.unknown_init_states += int((trained.init_state_id < 0).sum())
        trained = trained[trained.init_state_id >= 0]
        found.triples.update(zip(trained.suite, trained.task_id.astype(int), trained.init_state_id.astype(int)))
        recorded = trained[trained.init_config.ne("[]") & trained.init_config.ne("")]
        found.configs.update(zip(recorded.suite, recorded.task_id.astype(int), recorded.init_config.map(lambda c: _canonical(json.loads(c)))))


def _canonical(init_config: list[float]) -> str:
    """One text per configuration vector, whether it came from a store's JSON or from the env."""
    return json.dumps([float(v) for v in init_config])


def check_splits(protocol: str, slots: list[Slot], training: Training, init_configs: dict[Triple, list[float]]) -> dict[str, Any]:
    """Refuse validation slots that meet the test slots or the training triples (custom protocol);
    return the record of what was checked, for results.json. ``init_configs``: triple -> the env's
    configuration vector, where the id alone does not fix the scene."""
    validation = _triples(s for s in slots if s.split == VALIDATION)
    test = _triples(s for s in slots if s.split == TEST)
    shared = sorted(validation & test)
    if shared:
        raise CfgrlError(f"the validation init states meet the test init states in {len(shared)} (suite, task, init state) "
                         f"triples, e.g. {_show(shared)}: set evaluate.init_states (or env.init_states) to leave out "
                         "evaluate.validation_init_states, so w is not chosen on test episodes")
    trained_validation = sorted(_met(validation, training, init_configs))
    if trained_validation:
        raise CfgrlError(f"the policy (or the checkpoint it was fine-tuned from) trained on {len(trained_validation)} of the "
                         f"validation (suite, task, init state) triples, e.g. {_show(trained_validation)}: choose "
                         f"evaluate.validation_init_states outside the training stores' init states ({', '.join(training.stores)})")
    return {
        "validation_meets_test": len(shared),
        "training_checked": not training.unchecked,
        "training_unchecked": training.unchecked,
        "training_stores": training.stores,
        "training_unknown_init_states": training.unknown_init_states,
        "validation_meets_training": len(trained_validation),
        "test_meets_training": len(_met(test, training, init_configs)),
    }


def _triples(slots: Iterable[Slot]) -> set[Triple]:
    return {(s.suite, s.task_id, s.init_state_id) for s in slots}


def _met(triples: set[Triple], training: Training, init_configs: dict[Triple, list[float]]) -> set[Triple]:
    """The triples the training saw: by id, or by the configuration the id stands for where recorded."""
    def seen(t: Triple) -> bool:
        config = init_configs.get(t)
        return t in training.triples or (bool(config) and (t[0], t[1], _canonical(config)) in training.configs)

    return {t for t in triples if seen(t)}


def _show(triples: list[Triple]) -> str:
    return ", ".join(f"{suite} task {task} init {init}" for suite, task, init in triples[:3])


def statement(protocol: str, splits: dict[str, Any], validation_episodes: int) -> str:
    """The sentence results.json gives for where w was chosen, written from ``check_splits``'s record."""
    if protocol == "libero":
        where = "layouts drawn from LIBERO's placement regions (init states from 50 up), disjoint from its fixed test init states"
    else:
        where = "init states disjoint from the test init states"
    if splits["training_checked"]:
        where += f", and from the {len(splits['training_stores'])} training store(s) of the policy's lineage" if not splits[
            "validation_meets_training"] else f"; {splits['validation_meets_training']} of them were in training"
    else:
        where += "; overlap with the policy's training was not checkable: " + "; ".join(splits["training_unchecked"])
    if splits.get("training_unknown_init_states"):
        where += f" ({splits['training_unknown_init_states']} training episodes record no init state and were not compared)"
    return f"validation: {validation_episodes} episodes per w on {where}"
