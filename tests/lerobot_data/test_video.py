"""`VideoFile` decodes only the packets from a key frame up to a kept frame of an AV1 stream: the frames it
returns are those of decoding every packet, for any kept steps, across episodes and after a backward seek."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfgrl.lerobot_data import video
from cfgrl.lerobot_data.dataset import Dataset

DATASET = Path(__file__).resolve().parent.parent / "fixtures" / "lerobot_dataset"
KEY = "observation.images.image"  # AV1 (lerobot's libsvtav1, GOP 2); the other camera is PNG


def read_all(file: video.VideoFile, dataset: Dataset, keep_every: int, order: list[int]) -> list[np.ndarray]:
    episodes = dataset.episodes.set_index("episode_index")
    out = []
    for index in order:
        length = int(episodes.length[index])
        start = float(episodes[f"videos/{KEY}/from_timestamp"][index])
        out.append(file.frames(start, length, np.arange(0, length, keep_every), 24))
    return out


@pytest.mark.parametrize("keep_every", [1, 2, 3, 5])
def test_skipping_undecoded_packets_returns_the_frames_of_decoding_them_all(monkeypatch, keep_every):
    dataset = Dataset.open(DATASET)
    path = dataset.video_file(dataset.episodes.iloc[0], KEY)
    order = [0, 1, 2, 3, 1, 3]  # forward, then back (a seek), then on past what was read
    decoded = []
    skipping = video.VideoFile(path, dataset.fps)
    original = skipping._decode
    monkeypatch.setattr(skipping, "_decode", lambda packet: decoded.append(packet) or original(packet))
    assert skipping._skip
    try:
        ours = read_all(skipping, dataset, keep_every, order)
    finally:
        skipping.close()
    monkeypatch.setattr(video, "IN_ORDER_CODECS", set())
    whole = video.VideoFile(path, dataset.fps)
    assert not whole._skip
    try:
        reference = read_all(whole, dataset, keep_every, order)
    finally:
        whole.close()
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(a, b)
    frames = int(sum(dataset.episodes.length[i] for i in order))
    assert (len(decoded) < frames) == (keep_every > 1)  # every kept frame's packet and its key frame's, no more
