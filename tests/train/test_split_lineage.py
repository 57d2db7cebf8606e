"""evaluate's split check reads what a trained checkpoint and the checkpoints it was fine-tuned from
trained on, and refuses validation init states among them before any episode runs."""

from pathlib import Path

import pytest

from train_helpers import label, run_train, write_store
from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import TEST, VALIDATION, Slot
from cfgrl.evaluate.runner import evaluate_policy
from cfgrl.evaluate.splits import check_splits, training_of

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _slots(test: list[int], validation: list[int]) -> list[Slot]:
    return ([Slot(TEST, "reach", 0, "p", i, 0, i) for i in test]
            + [Slot(VALIDATION, "reach", 0, "p", i, 0, 100 + i) for i in validation])


@pytest.fixture(scope="module")
def lineage(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """A base trained on init states 0-1 (store a), then fine-tuned on init states 10-11 (store b)."""
    root = tmp_path_factory.mktemp("lineage")
    a = write_store(root / "a.zarr", episodes=8, group_size=4)  # tasks 0/1, init states 0 and 1
    b = write_store(root / "b.zarr", episodes=8, group_size=4, offset=40)  # init states 10 and 11
    base = run_train(root / "base", [a], label([a]), "train.steps=1")
    tuned = run_train(root / "tuned", [b], label([b]), "train.steps=1", f"policy.path={base}")
    return a, b, base, tuned


def test_training_triples_follow_the_lineage(lineage):
    a, b, base, tuned = lineage
    found = training_of(tuned)
    assert found.unchecked == [] and sorted(found.stores) == sorted(str(p.absolute()) for p in (a, b))
    assert {("reach", 0, 0), ("reach", 1, 1), ("reach", 0, 10), ("reach", 1, 11)} == found.triples
    assert training_of(base).triples == {("reach", 0, 0), ("reach", 1, 1)}


def test_validation_in_the_base_s_training_is_refused(lineage):
    *_, tuned = lineage
    with pytest.raises(CfgrlError, match=r"trained on 1 of the validation .* reach task 0 init 0"):
        check_splits("custom", _slots([5], [0]), training_of(tuned), {})
    record = check_splits("custom", _slots([5], [6]), training_of(tuned), {})
    assert record["training_checked"] and record["validation_meets_training"] == 0 and record["test_meets_training"] == 0
    # LIBERO's protocol validates on drawn layouts now: its overlaps are refused like any other
    with pytest.raises(CfgrlError, match="validation init states meet the test init states in 1"):
        check_splits("libero", _slots([0], [0]), training_of(tuned), {})
    with pytest.raises(CfgrlError, match="trained on 1 of the validation"):
        check_splits("libero", _slots([5], [0]), training_of(tuned), {})


def test_evaluate_refuses_before_writing(lineage, tmp_path):
    *_, tuned = lineage
    cfg = load_config(None, ["env.tasks=[0, 1]", "env.init_states=[7]", "evaluate.validation_init_states=[10]",
                             "evaluate.cfg_scales=[1, 2]"])
    with pytest.raises(CfgrlError, match="trained on 1 of the validation"):
        evaluate_policy(cfg, tuned, out_dir=tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval").exists()


def test_a_configuration_met_under_another_id_counts_as_trained(lineage):
    *_, tuned = lineage
    training = training_of(tuned)
    training.configs.add(("reach", 0, "[0.5, 0.25]"))  # as a store recording Meta-World's vectors would
    with pytest.raises(CfgrlError, match="trained on 1 of the validation"):
        check_splits("custom", _slots([5], [30]), training, {("reach", 0, 30): [0.5, 0.25]})


def test_a_lerobot_checkpoint_is_not_checkable_and_says_so():
    found = training_of(FIXTURES / "lerobot_pi0")
    assert found.triples == set() and "records no training data" in found.unchecked[0]
    record = check_splits("custom", _slots([0], [1]), found, {})
    assert not record["training_checked"] and record["training_unchecked"] == found.unchecked


def test_episodes_without_an_init_state_are_counted_not_compared(tmp_path):
    from train_helpers import CAMERAS, make_episode
    from cfgrl.evaluate.splits import statement
    from cfgrl.store import StoreLayout, StoreWriter

    path = tmp_path / "imported.zarr"
    with StoreWriter(path, StoreLayout(CAMERAS, (16, 16, 3), 8, 7)) as writer:
        for i in range(8):
            episode = make_episode(i, 20, 16, success=(i % 2 == 0), group_size=4)
            episode.meta["init_state_id"] = -1  # as `cfgrl import` records a demonstration's unknown scene
            writer.append(episode)
    policy = run_train(tmp_path / "run", [path], label([path]), "train.steps=1")
    found = training_of(policy)
    assert found.triples == set() and found.unknown_init_states == 8
    record = check_splits("custom", _slots([5], [6]), found, {})
    assert record["training_unknown_init_states"] == 8
    assert "8 training episodes record no init state and were not compared" in statement("custom", record, 1)


def test_a_lineage_whose_label_index_is_gone_is_reported_not_checkable(tmp_path):
    import shutil

    store = write_store(tmp_path / "s.zarr")
    labels = label([store])
    policy = run_train(tmp_path / "run", [store], labels, "train.steps=1")
    shutil.rmtree(labels)
    found = training_of(policy)
    assert found.triples == set() and "label index" in found.unchecked[0]
    assert not check_splits("custom", _slots([5], [6]), found, {})["training_checked"]
