"""The rollout engine, shared by the ``collect`` and ``evaluate`` stages (and importing neither).

* ``specs``   which episodes a run holds: ``EpisodeSpec``, the group grid, shards, run ids
* ``seeds``   every episode seed
* ``plan``    what the env offers, a collection's episodes and which of them are still missing
* ``waves``   adaptive collection: the next wave of groups, planned from the outcomes in the store
* ``sources`` where actions come from: a PI0 checkpoint, a fresh PI0, the scripted expert
* ``worker``  the environment processes
* ``engine``  the batched loop: ``run_episodes``, and ``episode_data`` for a store
* ``videos``  MP4s of the first episodes
"""
