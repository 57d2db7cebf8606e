"""The rollout store: a Zarr v3 group of flat per-step arrays plus an episode table.

Layout (diffusion_policy's ReplayBuffer idea: flat arrays along time, episodes as offsets)::

    store.zarr/                      root attributes: schema, schema_version, num_episodes, cameras, ...
      steps/state   (N, 8)  float32  the state observed before the step's action
      steps/action  (N, 7)  float32  the action executed at the step
      steps/reward  (N,)    float32  reward of that action
      steps/done    (N,)    bool     success reached by that action (the episode's last step)
      steps/is_wait (N,)    bool     LIBERO's settle steps with the "do nothing" action
      frames/<cam>  (M, H, W, 3) uint8  the images the policy saw, at its query steps only
      frames/step   (M,)    int32    step index (within its episode) of each frame
      episodes/<column> (E,)         one row per episode, see EPISODE_COLUMNS

Episode ``e`` owns steps ``[step_start[e], step_start[e] + length[e])`` and frames
``[frame_start[e], frame_start[e] + frame_count[e])``.

One writer per store: a ``StoreWriter`` holds an exclusive ``flock`` on ``<store>.lock``, a file
beside the store holding the writer's pid, from before the store is created until it is closed. The
kernel drops the lock when the process dies, SIGKILL included. A second writer, whatever the command,
fails with one line naming the holder's pid. The lock file stays (removing it would let two writers
lock two different files).

Atomic creation: the writer builds the empty store under ``.tmp-<name>`` beside it and renames it
into place, so ``<store>`` is either absent or a whole store. A crash before the rename leaves only
that directory, which the next writer (holding the lock, so no creator is running) removes.

Commit protocol: a commit writes the new rows of every array after its committed rows, then
rewrites the root attribute ``num_episodes`` (an atomic file replace: zarr >= 3.1.3 writes every file
under a temporary name and renames it). Readers trust only the first ``num_episodes`` rows, so after a
crash at any moment the store opens with exactly the committed episodes; the next writer truncates
the uncommitted tails. A crash may also leave zarr's ``*.partial`` temporary files, which nothing reads.

Fault injection, for crash tests: ``CFGRL_FAULT=<point>`` makes the process SIGKILL itself when it
reaches the named point, ``<point>@<n>`` the n-th time it does, and ``<point>[@<n>]:sleep`` makes it
print ``cfgrl fault point <point> reached (pid N)`` to stderr and sleep until killed instead. The
points (``fault_point`` calls): ``store.locked`` (lock taken, nothing created), ``store.creating``
(temporary group begun, no array yet), ``store.created_tmp`` (temporary store complete, not renamed),
``store.renamed`` (store in place, empty), ``store.appended`` (a commit's rows written, ``num_episodes``
not yet bumped).
"""

# One module per job, the names above them re-exported so that every ``cfgrl.store.NAME`` import stays:
#   layout.py  what a store holds: the arrays and episode columns, StoreLayout, EpisodeData, episode_frames
#   reader.py  Store (read-only view of the committed episodes) and open_stores
#   writer.py  StoreWriter (creation, truncation, commits) and the chunk sizes it creates arrays with
#   lock.py    writer_lock, the one-writer lock
#   faults.py  fault_point and CFGRL_FAULT, the crash-test hooks
#   chunks.py  every committed chunk accounted for (a listing on open, decoding on demand)
# Re-exported names are copies: a test that patches a setting the code reads (writer.FLUSH_BYTES,
# writer._write_rows) patches it in the module that reads it.

from cfgrl.store.faults import FAULT_ENV, fault_point
from cfgrl.store.layout import EPISODE_COLUMNS, OFFSET_COLUMNS, STEP_ARRAYS, EpisodeData, StoreLayout, episode_frames
from cfgrl.store.lock import writer_lock
from cfgrl.store.reader import Store, open_stores
from cfgrl.store.writer import (EPISODE_CHUNK, FLUSH_BYTES, FRAME_CHUNK_BYTES, STEP_CHUNK, StoreWriter, episode_bytes,
                                frame_chunk)

__all__ = [
    "EPISODE_CHUNK", "EPISODE_COLUMNS", "FAULT_ENV", "FLUSH_BYTES", "FRAME_CHUNK_BYTES", "OFFSET_COLUMNS", "STEP_ARRAYS",
    "STEP_CHUNK", "EpisodeData", "Store", "StoreLayout", "StoreWriter", "episode_bytes", "episode_frames", "fault_point",
    "frame_chunk", "open_stores", "writer_lock",
]
