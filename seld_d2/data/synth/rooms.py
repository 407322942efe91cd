"""Procedural room meshes for the ray tracer: a scene's room (shoebox or L-shaped, see
:class:`scene.Room`) as a closed triangle mesh with its normals facing into the room, written as
glTF binary (``.glb``: AudibleLight reads the file name from the metadata trimesh keeps only for
glTF).

Rooms are built here, offline, with trimesh: the floor polygon extruded to the ceiling height
(caps as a fan of triangles from the polygon's first corner, which sees the whole floor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .scene import Room


def room_mesh_arrays(room: Room) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (2K, 3) and triangles (4K - 4, 3) of the room's closed surface, wound so that the
    normals face into the room (K: corners of the floor plan)."""
    plan = room.floor_plan()
    k = len(plan)
    height = float(room.size[2])
    vertices = np.concatenate(
        [np.column_stack([plan, np.zeros(k)]), np.column_stack([plan, np.full(k, height)])]
    )
    faces = []
    for i in range(1, k - 1):  # floor (normal +z, into the room) and ceiling (normal -z)
        faces.append((0, i, i + 1))
        faces.append((k, k + i + 1, k + i))
    for i in range(k):  # walls: the plan is counter-clockwise, so (a, b, b') faces inwards
        a, b = i, (i + 1) % k
        faces.append((a, k + b, b))
        faces.append((a, k + a, k + b))
    return vertices, np.asarray(faces, np.int64)


def room_mesh(room: Room):
    """The room as a ``trimesh.Trimesh`` (units metres), watertight, normals facing inwards."""
    import trimesh

    vertices, faces = room_mesh_arrays(room)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    mesh.units = "meters"
    return mesh


def write_room_mesh(room: Room, path: str | Path) -> Path:
    """Write the room's mesh as ``.glb`` (glTF binary) and return the path."""
    path = Path(path)
    if path.suffix != ".glb":
        raise ValueError(f"{path}: room meshes are written as .glb (glTF binary)")
    room_mesh(room).export(path, file_type="glb")
    return path
