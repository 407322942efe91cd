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


# ----------------------------------------------------------------------------------------------
# textured surface for the video
# ----------------------------------------------------------------------------------------------

TEXTURE_TILE = 128  # pixels per surface tile of the room's texture atlas


def textured_room_arrays(
    room: Room, rng: np.random.Generator, tile: int = TEXTURE_TILE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The room's inner surface with texture coordinates, for the video: vertices (V, 3), triangles
    (F, 3), UV (V, 2) in [0, 1] (v up) and an RGB uint8 atlas (tile, tile * (K + 2), 3) with one
    tile per surface (floor, ceiling, then the K walls in floor-plan order).

    Every surface has its own vertices (a corner has one UV per surface), so the mesh is not
    watertight: the ray tracer keeps :func:`room_mesh`. The look follows ``video.py``'s room: a
    planked or tiled floor, a ceiling with a lamp, walls with a skirting board, a door, a window and
    pictures; shading is baked in (the video renders without lights)."""
    plan = room.floor_plan()
    k = len(plan)
    sx, sy, height = (float(v) for v in room.size)
    tiles = k + 2
    atlas = np.zeros((tile, tile * tiles, 3), np.float64)
    g = (np.arange(tile) + 0.5) / tile  # tile coordinate of a texel centre, 0..1
    u, v = np.meshgrid(g, g[::-1])  # row 0 is the top of the tile (v = 1)

    wood = rng.random() < 0.6
    floor_col = np.array([0.55, 0.38, 0.22]) * rng.uniform(0.7, 1.2) if wood else rng.uniform(0.3, 0.6, 3)
    fx, fy = u * sx, v * sy
    if rng.random() < 0.5:
        plank = rng.uniform(0.12, 0.25)
        idx = np.floor(fy / plank)
        shade = 0.85 + 0.15 * np.sin(idx * 12.9898 + 3.0 * np.sin(idx * 78.233))
        seam = np.abs(fy / plank - np.round(fy / plank)) < 0.06
    else:
        size = rng.uniform(0.3, 0.6)
        shade = 0.9 + 0.1 * ((np.floor(fx / size) + np.floor(fy / size)) % 2)
        gx, gy = fx / size, fy / size
        seam = (np.abs(gx - np.round(gx)) < 0.04) | (np.abs(gy - np.round(gy)) < 0.04)
    atlas[:, :tile] = floor_col * (0.75 * shade * (1.0 - 0.35 * seam))[..., None]
    ceiling = np.full((tile, tile, 3), rng.uniform(0.85, 0.97))
    lamp = (np.abs(fx - sx / 2) < 0.4) & (np.abs(fy - sy / 2) < 0.4)
    ceiling[lamp] = 1.0
    atlas[:, tile : 2 * tile] = ceiling

    wall = rng.uniform(0.55, 0.9, 3) * rng.uniform(0.85, 1.0)
    door_wall, window_wall = rng.choice(k, 2, replace=False)
    vertices, faces, uv = [], [], []

    def add(points: np.ndarray, coords: np.ndarray, index: int, triangles: list) -> None:
        base = sum(len(p) for p in vertices)
        vertices.append(points)
        uv.append(np.column_stack([(index + coords[:, 0]) / tiles, coords[:, 1]]))
        faces.extend((base + a, base + b, base + c) for a, b, c in triangles)

    fan = [(0, i, i + 1) for i in range(1, k - 1)]
    flat = plan / np.array([sx, sy])
    add(np.column_stack([plan, np.zeros(k)]), flat, 0, fan)
    add(np.column_stack([plan, np.full(k, height)]), flat, 1, [(a, c, b) for a, b, c in fan])
    for i in range(k):
        a, b = plan[i], plan[(i + 1) % k]
        span = float(np.linalg.norm(b - a))
        img = np.broadcast_to(wall * rng.uniform(0.85, 1.05), (tile, tile, 3)).copy()
        along, z = u * span, v * height
        img[z < 0.1] *= 0.5  # skirting board
        if i == door_wall and span > 1.2:
            at = rng.uniform(0.6, span - 0.6)
            door = np.array([0.45, 0.3, 0.18]) * rng.uniform(0.7, 1.3)
            img[(np.abs(along - at) < 0.45) & (z < 2.05)] = door
        if i == window_wall and span > 1.6:
            at = rng.uniform(0.8, span - 0.8)
            win = (np.abs(along - at) < 0.6) & (np.abs(z - 1.5) < 0.5)
            img[win] = np.array([0.65, 0.8, 0.97])
            img[win & ((np.abs(along - at) < 0.03) | (np.abs(z - 1.5) < 0.03))] = 0.95
        for _ in range(int(rng.integers(0, 3))):  # pictures
            at, hgt = rng.uniform(0.15, 0.85) * span, rng.uniform(1.3, 1.8)
            img[(np.abs(along - at) < 0.3) & (np.abs(z - hgt) < 0.22)] = rng.uniform(0.1, 0.9, 3)
        atlas[:, (i + 2) * tile : (i + 3) * tile] = img
        quad = np.array([[*a, 0.0], [*b, 0.0], [*b, height], [*a, height]])
        add(quad, np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), i + 2, [(0, 2, 1), (0, 3, 2)])
    atlas_u8 = np.clip(atlas * 255.0, 0, 255).astype(np.uint8)
    return np.concatenate(vertices), np.asarray(faces, np.int64), np.concatenate(uv), atlas_u8


def textured_room_mesh(room: Room, rng: np.random.Generator, tile: int = TEXTURE_TILE):
    """:func:`textured_room_arrays` as a ``trimesh.Trimesh`` with texture visuals (UV and the
    atlas as its material's image; exported as ``.glb`` it keeps both)."""
    import trimesh
    from PIL import Image

    vertices, faces, uv, atlas = textured_room_arrays(room, rng, tile)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(atlas))
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    mesh.units = "meters"
    return mesh
