"""Vertex clustering of meshes (``cfgrl.envs.meshes``) on a synthetic mesh; the Meta-World
arm's meshes are tested in test_metaworld.py."""

from __future__ import annotations

import numpy as np

from cfgrl.envs.meshes import clustered_faces


def _bumpy_sheet(n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of vertices over the unit square (small z bumps), two triangles per cell, all
    facing +z (counter-clockwise seen from above)."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    verts = np.stack([x.ravel(), y.ravel(), 0.01 * np.sin(9 * x.ravel()) * np.cos(7 * y.ravel())], axis=1)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a, b, c, d = (i * n + j).ravel(), ((i + 1) * n + j).ravel(), ((i + 1) * n + j + 1).ravel(), (i * n + j + 1).ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _up(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = verts[faces]
    return np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2]


def test_a_cell_finer_than_the_vertices_keeps_every_face():
    verts, faces = _bumpy_sheet(21)
    np.testing.assert_array_equal(clustered_faces(verts, faces, 0.01), faces)


def test_coarse_cells_leave_fewer_valid_faces_that_still_cover_the_sheet_facing_up():
    verts, faces = _bumpy_sheet(61)
    coarse = clustered_faces(verts, faces, 0.1)
    assert 50 < len(coarse) < len(faces) / 20
    assert coarse.min() >= 0 and coarse.max() < len(verts)
    assert (coarse[:, 0] != coarse[:, 1]).all() and (coarse[:, 1] != coarse[:, 2]).all() and (coarse[:, 0] != coarse[:, 2]).all()
    assert len(np.unique(np.sort(coarse, axis=1), axis=0)) == len(coarse)  # no triangle twice
    up = 0.5 * _up(verts, coarse)  # signed area seen from above
    assert 0.9 < up.sum() <= 1.0  # the unit square is still covered, facing +z (orientation kept) ...
    assert -up[up < 0].sum() < 0.02 * up.sum()  # ... but for a few folded slivers, clustering's known artefact
    used = np.unique(coarse)
    cells = np.unique(np.floor(verts[used] / 0.1), axis=0)
    assert len(cells) == len(used)  # one representative vertex per cell
