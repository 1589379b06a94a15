"""Analytic ray casting: nearest hit of rays with the ground plane and oriented boxes (slab test).

Rays are only tested against the boxes whose screen (or azimuth) window contains them: see
:func:`pinhole_windows` and :func:`azimuth_windows`.
"""

from __future__ import annotations

import math

import torch

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.synthetic.scene import FrameBoxes

GROUND_FAR = 400.0  # ground hits beyond this many metres render as sky (they are sub-pixel anyway)
NEAR = 0.05

# torch's advanced indexing is several times slower on CPU than index_select on contiguous rows; the renderer
# keeps (3, N) layouts and gathers with take throughout.


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[..., index]`` along the last dimension."""
    return torch.index_select(x, x.dim() - 1, index)


Window = tuple[int, slice, slice, float]  # box index, rows, columns, lower bound of t over the box
SMALL_WINDOW = 1024  # windows up to this many rays are tested in one batch instead of one by one


def _slab_entry(lower: torch.Tensor, upper: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Ray parameter where rays from the origin enter boxes [lower, upper] (slab method), inf on a miss.

    Args:
        lower, upper: (3, ...) box bounds relative to the ray origin, in the box frame (broadcastable).
        directions: (3, ...) ray directions in the box frame.
    """
    t0, t1 = lower / directions, upper / directions
    t_near = torch.minimum(t0, t1).amax(0)
    t_far = torch.maximum(t0, t1).amin(0)
    return torch.where((t_near <= t_far) & (t_near > NEAR), t_near, math.inf)


def _box_frames(
    origin: torch.Tensor, rotation: torch.Tensor, boxes: FrameBoxes
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per box: sensor->box rotation (B, 3, 3) and the box bounds relative to the sensor (B, 3) each."""
    to_box = boxes.rotation.transpose(1, 2) @ rotation
    local_origin = ((origin - boxes.centre)[:, None, :] @ boxes.rotation).squeeze(1)
    return to_box, -boxes.half - local_origin, boxes.half - local_origin


def cast_pairs(
    origin: torch.Tensor,
    rotation: torch.Tensor,
    directions: torch.Tensor,
    boxes: FrameBoxes,
    box: torch.Tensor,
) -> torch.Tensor:
    """Entry parameter of ray i into box ``box[i]`` for M (ray, box) pairs at once.

    Args:
        directions: (3, M) sensor-frame directions; box: (M,) int64 box indices.

    Returns:
        (M,) t, inf on a miss.
    """
    _, lower, upper = _box_frames(origin, rotation, boxes)
    world = rotation @ directions
    cos, sin = take(boxes.columns[3:5], box)
    local = torch.stack([cos * world[0] + sin * world[1], cos * world[1] - sin * world[0], world[2]])
    return _slab_entry(take(lower.T.contiguous(), box), take(upper.T.contiguous(), box), local)


def cast_ground(
    origin: torch.Tensor, rotation: torch.Tensor, directions: torch.Tensor, far: float
) -> torch.Tensor:
    """Ray parameter of the hit with the ground z = 0 (directions (3, ...)), inf where none within ``far``."""
    dz = torch.tensordot(rotation[2], directions, 1)
    t = -origin[2] / dz
    return torch.where((dz < 0) & (t < far), t, math.inf)


def cast_rays(
    origin: torch.Tensor,
    rotation: torch.Tensor,
    directions: torch.Tensor,
    boxes: FrameBoxes,
    windows: list[Window],
    far: float = GROUND_FAR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of each ray with the ground plane z = 0 and the boxes.

    Args:
        origin: (3,) sensor position in the world.
        rotation: (3, 3) world_from_sensor.
        directions: (3, H, W) ray directions in the sensor frame; the returned ``t`` is in their units
            (z = 1 rays give z-depth, unit rays give range).
        windows: the only rays tested against each box, with a lower bound of ``t`` over the box. Large
            windows go one by one, near to far, skipping a box behind everything already hit in its window;
            small ones go in one batch.

    Returns:
        t: (H, W) ray parameter of the nearest hit, inf where nothing is hit (sky).
        ids: (H, W) int64: -1 nothing, 0 ground, b + 1 box b.
    """
    t = cast_ground(origin, rotation, directions, far)
    ids = torch.isfinite(t).long() - 1
    if not windows:
        return t, ids
    large = sorted((w for w in windows if _area(w, directions) > SMALL_WINDOW), key=lambda w: w[3])
    small = [w for w in windows if _area(w, directions) <= SMALL_WINDOW]
    to_box, lower, upper = _box_frames(origin, rotation, boxes)
    for box, rows, cols, t_min in large:
        t_win = t[rows, cols]
        if t_min >= float(t_win.max()):
            continue  # occluded by what is already hit
        local = torch.einsum("ij,jhw->ihw", to_box[box], directions[:, rows, cols])
        t_box = _slab_entry(lower[box, :, None, None], upper[box, :, None, None], local)
        ids[rows, cols] = torch.where(t_box < t_win, box + 1, ids[rows, cols])
        t[rows, cols] = torch.minimum(t_box, t_win)
    if small:
        box, pixel = _window_pairs(small, directions.shape[1:])
        t_pair = cast_pairs(origin, rotation, take(directions.flatten(1), pixel), boxes, box)
        t_flat, ids_flat = t.view(-1), ids.view(-1)
        t_flat.scatter_reduce_(0, pixel, t_pair, reduce="amin")
        won = torch.isfinite(t_pair) & (t_pair == t_flat[pixel])
        ids_flat[pixel[won]] = box[won] + 1
    return t, ids


def _area(window: Window, directions: torch.Tensor) -> int:
    rows = range(directions.shape[1])[window[1]]
    cols = range(directions.shape[2])[window[2]]
    return len(rows) * len(cols)


def _window_pairs(windows: list[Window], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (box, flat pixel index) pair covered by the windows."""
    height, width = shape
    spans = torch.tensor(
        [[w[0], *w[1].indices(height)[:2], *w[2].indices(width)[:2]] for w in windows], dtype=torch.long
    )
    box, r0, r1, c0, c1 = spans.unbind(1)
    widths = c1 - c0
    counts = (r1 - r0) * widths
    owner = torch.repeat_interleave(torch.arange(len(windows)), counts)
    offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[owner]
    pixel = (r0[owner] + offset // widths[owner]) * width + c0[owner] + offset % widths[owner]
    return box[owner], pixel


def pinhole_windows(
    boxes: FrameBoxes, T_cam_world: torch.Tensor, intrinsics: Intrinsics, max_depth: float = GROUND_FAR
) -> list[Window]:
    """Image rectangle covered by each box's projection, clipped to z >= NEAR (exact for convex boxes: the
    clipped box's vertices are its corners in front plus its edges' crossings of the near plane); the lower
    bound of z-depth over the box comes with it."""
    corners = boxes.corners() @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]  # (B, 8, 3)
    # the 12 edges join corners whose indices differ in exactly one bit
    edges = torch.tensor([(i, i | b) for i in range(8) for b in (1, 2, 4) if not i & b])
    a, b = corners[:, edges[:, 0]], corners[:, edges[:, 1]]
    s = (NEAR - a[..., 2]) / (b[..., 2] - a[..., 2])
    crossing = a + s.unsqueeze(-1) * (b - a)
    points = torch.cat([corners, crossing], 1)
    valid = torch.cat([corners[..., 2] >= NEAR, (s >= 0) & (s <= 1)], 1)
    z = torch.where(valid, points[..., 2], 1.0)
    u = intrinsics.fx * points[..., 0] / z + intrinsics.cx
    v = intrinsics.fy * points[..., 1] / z + intrinsics.cy
    big = 1e9
    u0 = torch.where(valid, u, big).amin(1).floor() - 1
    u1 = torch.where(valid, u, -big).amax(1).ceil() + 2
    v0 = torch.where(valid, v, big).amin(1).floor() - 1
    v1 = torch.where(valid, v, -big).amax(1).ceil() + 2
    near_z = torch.where(valid, points[..., 2], big).amin(1)
    visible = valid.any(1) & (u1 > 0) & (u0 < intrinsics.width) & (v1 > 0) & (v0 < intrinsics.height)
    visible &= near_z < max_depth
    width, height = intrinsics.width, intrinsics.height
    rect = torch.stack([u0.clamp(0, width), u1.clamp(0, width), v0.clamp(0, height), v1.clamp(0, height)], 1)
    index = torch.nonzero(visible).flatten()
    return [
        (i, slice(r[2], r[3]), slice(r[0], r[1]), z)
        for i, r, z in zip(index.tolist(), rect[index].long().tolist(), near_z[index].tolist(), strict=True)
    ]


def azimuth_windows(
    boxes: FrameBoxes, T_sensor_world: torch.Tensor, azimuths: int, max_range: float
) -> list[Window]:
    """Columns of a 360-degree scan (column j at azimuth -pi + 2 pi (j + 0.5) / azimuths) that can see each
    box: the azimuth span of its corners (exact: azimuth is monotonic along a segment), wrapped."""
    corners = boxes.corners() @ T_sensor_world[:3, :3].T + T_sensor_world[:3, 3]
    centre = corners.mean(1)
    radius = (corners - centre[:, None]).norm(dim=-1).amax(1)
    nearest = (centre.norm(dim=-1) - radius).clamp(min=0)
    base = torch.atan2(centre[:, 1], centre[:, 0])
    relative = torch.atan2(corners[..., 1], corners[..., 0]) - base[:, None]
    relative = torch.remainder(relative + math.pi, 2 * math.pi) - math.pi
    inside = centre[:, :2].norm(dim=-1) <= radius  # the sensor may be above the footprint: every column
    step = 2 * math.pi / azimuths
    first = torch.floor((base + relative.amin(1) + math.pi) / step - 0.5).long() - 1
    last = torch.ceil((base + relative.amax(1) + math.pi) / step - 0.5).long() + 2
    windows = []
    rows = slice(None)
    for box in torch.nonzero(nearest < max_range).flatten().tolist():
        lo, hi, t_min = int(first[box]), int(last[box]), float(nearest[box])
        if inside[box] or hi - lo >= azimuths:
            windows.append((box, rows, slice(0, azimuths), t_min))
            continue
        lo, hi = lo % azimuths, hi % azimuths
        if lo < hi:
            windows.append((box, rows, slice(lo, hi), t_min))
        else:
            windows += [(box, rows, slice(lo, azimuths), t_min), (box, rows, slice(0, hi), t_min)]
    return windows
