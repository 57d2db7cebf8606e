"""One positive set: CFGRL's o=1 branch, filtered BC and the weighted loss train on the same windows,
whatever ``cfgrl.zero_variance_groups`` or the threshold rule."""

import numpy as np
import pytest

from label_stores import REPLAN, Ep, sparse
from cfgrl.config import CFGRLConfig, load_config
from cfgrl.errors import CfgrlError
from cfgrl.label import make_label_index
from cfgrl.optimality import Label
from cfgrl.train.objectives import check_positives, epoch_labels, training_rows

MIXED, FAILED, SINGLE = 0, 1, 2


def _episodes() -> list[Ep]:
    """A mixed group (one success, one failure), an all-failed group and a one-rollout group (a success)."""
    return [Ep(sparse(60, True), MIXED), Ep(sparse(70, False), MIXED),
            Ep(sparse(60, False), FAILED), Ep(sparse(65, False), FAILED),
            Ep(sparse(60, True), SINGLE)]


def _trained_positives(windows, manifest) -> dict[str, set[int]]:
    """The windows each objective trains as positives: o=1 for CFGRL (no dropout), the rows of filtered
    BC, the weight-1 windows of the weighted loss."""
    cfgrl = epoch_labels("cfgrl", windows, manifest, False, 0, 0)
    weighted = epoch_labels("weighted", windows, manifest, False, 0, 0)
    return {"cfgrl": set(np.flatnonzero(cfgrl.o == Label.OPTIMAL)),
            "filtered_bc": set(training_rows("filtered_bc", windows).tolist()),
            "weighted": set(np.flatnonzero(weighted.w_pos == 1.0))}


@pytest.mark.parametrize("settings", [{"zero_variance_groups": "unconditional"}, {"zero_variance_groups": "drop"},
                                      {"zero_variance_groups": "keep"}, {"label_quantile": 0.5}])
def test_every_objective_trains_the_same_positives(make_store, settings):
    store = make_store(_episodes())
    index = make_label_index([store], CFGRLConfig(dropout_prob=0.0, **settings), REPLAN, None, None)
    windows = index.windows
    trained = _trained_positives(windows, index.manifest)
    assert trained["cfgrl"], "the mixed group's success gives positives"
    assert trained["cfgrl"] == trained["filtered_bc"] == trained["weighted"]
    # the weighted loss never imitates the all-failed group (under the old rule, A = 0 >= 0 gave weight 1)
    weights = epoch_labels("weighted", windows, index.manifest, False, 0, 0).w_pos
    failed = (windows.group_id == FAILED).to_numpy()
    assert (weights[failed] == 0).all()
    assert settings.get("zero_variance_groups") != "drop" or not failed.any()


def test_objectives_needing_positives_refuse_an_index_without_one(make_store, tmp_path):
    store = make_store(_episodes())
    index = make_label_index([store], CFGRLConfig(label_source="none"), REPLAN, None, None)
    for objective in ("filtered_bc", "weighted"):
        with pytest.raises(CfgrlError, match=f"objective {objective}: label index {index.version} has no positive window") as err:
            check_positives(objective, index.windows, index.version)
        assert "\n" not in str(err.value)
    check_positives("cfgrl", index.windows, index.version)  # plain behaviour cloning needs none

    from cfgrl.train.trainer import train

    cfg = load_config(None, ["train.objective=weighted", "train.steps=1", "train.batch_size=2"])
    with pytest.raises(CfgrlError, match="objective weighted: .* no positive window"):
        train(cfg, [store.path], str(store.path), tmp_path / "run", False, set())
    assert not (tmp_path / "run").exists()


def test_failed_episodes_drop_leaves_the_positives_and_removes_every_failure(make_store):
    store = make_store(_episodes())
    keep = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    assert "failed_episodes" not in keep.manifest["settings"]  # the versions made before the setting keep their ids
    drop = make_label_index([store], CFGRLConfig(failed_episodes="drop"), REPLAN, None, None)
    assert drop.version != keep.version and drop.manifest["settings"]["failed_episodes"] == "drop"
    success = {0: True, 1: False, 2: False, 3: False, 4: True}  # _episodes(), in order
    assert set(drop.windows.episode) == {e for e, ok in success.items() if ok}
    assert drop.manifest["counts"]["failed_windows_dropped"] == int((~keep.windows.episode.map(success)).sum())

    def positive_windows(index):
        w = index.windows
        return set(zip(w.episode[w.raw_label == 1], w.start[w.raw_label == 1]))

    assert positive_windows(drop) == positive_windows(keep) and positive_windows(keep)
