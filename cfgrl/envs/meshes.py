"""Coarser meshes for CPU rendering, by vertex clustering on a grid.

A CPU rasteriser (Mesa's llvmpipe) pays per triangle, not per pixel: Meta-World's Sawyer arm has 67k
triangles, most far smaller than a pixel at 64-128 px, and drawing them is ~80% of a frame. Every
vertex of a mesh that falls in one grid cell is replaced by the cell's vertex nearest to the cell's
mean; triangles that collapse, or repeat another, are dropped. Only dense meshes are coarsened
(``DENSE_FACES``: Meta-World's arm links hold 2.4k-13.5k triangles each, while its task objects, at
most ~900, are small parts the policy must see as they are), and a textured mesh only when it is a
scan (``TEXTURED_DENSE_FACES``: LIBERO's bowls hold 42k triangles, its plate's 3.5k carry a rim
pattern that merged corners smear). Only the face lists change (with each corner's normal and texture
coordinate taken from its new vertex), before the renderer's GL context uploads them. Physics never
reads them: the vertices, normals and inertia stay as MuJoCo compiled them, and collisions use the
convex hull it compiled from the full mesh (only ray casts, ``mj_ray`` and rangefinders, would see the
coarser faces).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DENSE_FACES = 1000  # meshes with more triangles than this are coarsened
TEXTURED_DENSE_FACES = 10_000  # textured ones only above this


def clustered_faces(verts: np.ndarray, faces: np.ndarray, cell: float) -> np.ndarray:
    """``faces`` (F, 3) re-pointed at one representative vertex per ``cell``-sized grid cell, minus
    the triangles that collapse to a line or a point and the repeats; orientation is kept."""
    _, cell_of, counts = np.unique(np.floor(verts / cell).astype(np.int64), axis=0, return_inverse=True, return_counts=True)
    cell_of = cell_of.ravel()
    means = np.zeros((counts.size, 3))
    np.add.at(means, cell_of, verts)
    means /= counts[:, None]
    order = np.lexsort((np.linalg.norm(verts - means[cell_of], axis=1), cell_of))  # per cell, nearest first
    first = np.r_[True, cell_of[order][1:] != cell_of[order][:-1]]
    representative = np.empty(counts.size, np.int64)
    representative[cell_of[order][first]] = order[first]
    merged = representative[cell_of[faces]]
    merged = merged[(merged[:, 0] != merged[:, 1]) & (merged[:, 1] != merged[:, 2]) & (merged[:, 0] != merged[:, 2])]
    _, kept = np.unique(np.sort(merged, axis=1), axis=0, return_index=True)
    return merged[np.sort(kept)]


def coarsen_dense_meshes(model: Any, cell: float) -> list[int]:
    """Rewrite, in place, the faces of ``model``'s dense meshes on a ``cell``-metre grid; returns the
    ids of the meshes rewritten. Call before making a renderer, or make its context again after."""
    changed = []
    for m in range(model.nmesh):
        textured = bool(model.mesh_texcoordnum[m])
        if model.mesh_facenum[m] <= (TEXTURED_DENSE_FACES if textured else DENSE_FACES):
            continue
        va, vn, fa, fn = (int(x) for x in (model.mesh_vertadr[m], model.mesh_vertnum[m], model.mesh_faceadr[m], model.mesh_facenum[m]))
        faces = model.mesh_face[fa:fa + fn]  # vertex ids within the mesh
        # A face corner's normal and texture coordinate are indexed apart from its vertex: each vertex
        # keeps those of any one corner it had.
        corners = [model.mesh_facenormal] + ([model.mesh_facetexcoord] if textured else [])
        of_vertex = []
        for table in corners:
            per_vertex = np.zeros(vn, np.int64)
            per_vertex[faces.ravel()] = table[fa:fa + fn].ravel()
            of_vertex.append(per_vertex)
        coarse = clustered_faces(model.mesh_vert[va:va + vn].astype(np.float64), faces, cell)
        model.mesh_face[fa:fa + len(coarse)] = coarse
        for table, per_vertex in zip(corners, of_vertex):
            table[fa:fa + len(coarse)] = per_vertex[coarse]
        model.mesh_facenum[m] = len(coarse)
        changed.append(m)
    return changed
