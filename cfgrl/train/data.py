"""The training input: windows of the cache served as whole batches, and each window's condition o.

A batch is fetched with ONE fancy-indexed read per memory map (``images[idx]``), not item by item,
so a worker delivers thousands of windows per second. The loader returns numpy batches with images
still uint8; ``to_device`` pins and moves them. The condition o is not read by workers: the main
process looks it up by window index, so a label redraw (--redraw-dropout) takes effect at once even
with persistent workers.

Conditions: ``cfgrl.optimality.Label`` codes, 1 (optimal), 0 (not optimal), -1 (∅: nothing is injected).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from cfgrl.train.cache import WindowCache

class WindowBatches(Dataset):
    """``dataset[indices]`` -> one batch (dict of numpy arrays) read from the cache's memory maps."""

    def __init__(self, cache: WindowCache):
        self.path, self.size = cache.path, len(cache)
        self._cache: WindowCache | None = cache

    def __getstate__(self) -> dict:
        # A worker started by "spawn" reopens the maps: pickling a memmap would copy the whole cache.
        return {"path": self.path, "size": self.size, "_cache": None}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, indices: list[int]) -> dict:
        if self._cache is None:
            self._cache = WindowCache.open(self.path)
        idx = np.sort(np.asarray(indices, dtype=np.int64))  # sorted reads walk the maps forward
        cache = self._cache
        horizon = cache.actions.shape[1]
        return {
            "index": idx,
            "images": {cam: np.ascontiguousarray(arr[idx]) for cam, arr in cache.images.items()},
            "state": np.ascontiguousarray(cache.state[idx]),
            "actions": np.ascontiguousarray(cache.actions[idx]),
            "action_is_pad": np.arange(horizon)[None, :] >= cache.num_valid[idx][:, None],
            "prompt_id": np.ascontiguousarray(cache.prompt[idx]),
        }


class ResumableBatchSampler(Sampler[list[int]]):
    """Per-rank batches of a DistributedSampler's shard for one epoch, able to start mid-epoch.

    With shuffling, one process taking batches of B and R processes taking batches of B/R see the
    same global batches (DistributedSampler deals the epoch's permutation out round-robin)."""

    def __init__(self, num_windows: int, batch_per_rank: int, world: int, rank: int, seed: int, subset: np.ndarray | None = None):
        self.subset = np.arange(num_windows) if subset is None else np.asarray(subset)
        self.sampler = DistributedSampler(range(len(self.subset)), num_replicas=world, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.batch = batch_per_rank
        self.skip = 0

    def set_position(self, epoch: int, skip_batches: int) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip_batches

    def __len__(self) -> int:
        return len(self.sampler) // self.batch

    def __iter__(self):
        order = list(self.sampler)
        for b in range(self.skip, len(self)):
            yield self.subset[order[b * self.batch : (b + 1) * self.batch]].tolist()


def make_loader(dataset: WindowBatches, batches: ResumableBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(
        dataset,
        sampler=batches,
        batch_size=None,  # the dataset returns whole batches
        num_workers=num_workers,
        pin_memory=pin_memory,
        # The batch sampler runs in this process, so workers can live across epochs and resumes.
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers else None,
    )


def to_device(batch: dict, prompts: list[str], o: np.ndarray, device: torch.device) -> dict:
    """The policy's batch: tensors on the device (images still uint8), prompts as strings, o per sample."""
    move = lambda x: torch.as_tensor(x).to(device, non_blocking=True)  # noqa: E731
    return {
        "images": {cam: move(img) for cam, img in batch["images"].items()},
        "state": move(batch["state"]),
        "actions": move(batch["actions"]),
        "action_is_pad": move(batch["action_is_pad"]),
        "prompt": [prompts[i] for i in np.asarray(batch["prompt_id"]).tolist()],
        "o": torch.as_tensor(o, dtype=torch.long, device=device),
    }
