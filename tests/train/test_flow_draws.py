"""The trainer's noise and flow-time draws are part of what makes a run reproducible (and a resumed
or re-split run bit-identical): these values must never change."""

import numpy as np
import torch

from cfgrl.train.objectives import flow_draws


def test_flow_draws_are_pinned():
    noise, time = flow_draws(np.array([0, 5, 17]), 3, 11, (2, 3), torch.device("cpu"))
    assert [float(t).hex() for t in time] == ["0x1.1ab34a0000000p-2", "0x1.a6edf00000000p-2", "0x1.678e6e0000000p-1"]
    assert noise.shape == (3, 2, 3)
    assert noise[:, 0].tolist() == [
        [-1.33021879196167, -1.1116812229156494, -0.12388736009597778],
        [-0.21053697168827057, -1.128363847732544, 0.45949557423591614],
        [-0.02661244384944439, -0.04338045045733452, -1.0712085962295532],
    ]
