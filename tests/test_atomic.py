"""Files replaced whole (``cfgrl.atomic``): the old content or the new, no temporary left behind, and
a directory's owner deletes what killed writers left."""

import pytest

from cfgrl import atomic
from cfgrl.evaluate.ledger import run_lock


def test_write_text_replaces_the_file_whole_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_text(path, "old\n")
    atomic.write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(UnicodeEncodeError):  # the write fails halfway: the old content stays
        atomic.write_text(path, "half \udc80")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_evaluation_run_directory_loses_what_a_killed_writer_left(tmp_path):
    run = tmp_path / "eval"
    run.mkdir()
    left = [run / ".tmp-results.json-4242", run / ".tmp-shard.json-17"]
    mine = run / ".tmp-notes.txt-1"  # not a file evaluate writes: not evaluate's to delete
    for path in (*left, mine):
        path.write_text("half")
    with run_lock(run):
        assert not any(p.exists() for p in left) and mine.exists()
