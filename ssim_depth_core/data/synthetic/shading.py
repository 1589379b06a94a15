"""Shading: textured, lit surfaces where rays hit, the sky at infinity, edge anti-aliasing, camera frames."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.synthetic.raycast import (
    GROUND_FAR,
    cast_ground,
    cast_pairs,
    cast_rays,
    pinhole_windows,
    take,
)
from ssim_depth_core.data.synthetic.scene import FrameBoxes, StreetScene
from ssim_depth_core.data.synthetic.textures import ROAD, SIDEWALK, SKY, TEXELS, TEXTURE_SIZE, sample_texture
from ssim_depth_core.geometry import ray_grid

# torch's norm and argmax over a short leading dimension are several times slower on CPU than these (3, N)
# equivalents.


def _length(v: torch.Tensor) -> torch.Tensor:
    """(3, N) -> (N,) Euclidean norms."""
    return torch.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _argmax3(v: torch.Tensor) -> torch.Tensor:
    """(3, N) -> (N,) index of the largest row entry per column (first one on ties)."""
    x, y, z = v
    return torch.where((x >= y) & (x >= z), 0, torch.where(y >= z, 1, 2))


@dataclass
class Surface:
    """Material where rays hit something."""

    index: torch.Tensor  # (M,) which rays hit
    albedo: torch.Tensor  # (3, M)
    normal: torch.Tensor  # (3, M) outward world normal
    key: torch.Tensor  # (M,) int64 surface id: 0 sidewalk, 1 road, 8 (b + 1) + face for box b


def shade_hits(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    directions: torch.Tensor,
    t: torch.Tensor,
    ids: torch.Tensor,
    pixel_angle: float,
) -> Surface:
    """Albedo and normal where rays hit; the mip level follows the ray footprint.

    Args:
        directions: (3, N) world ray directions (any length; ``t`` is in their units).
        t, ids: (N,) as returned by :func:`cast_rays`, flattened.
        pixel_angle: angle (radians) between neighbouring rays.
    """
    on_box = torch.nonzero(ids > 0).flatten()
    on_ground = torch.nonzero(ids == 0).flatten()
    index = torch.cat([on_box, on_ground])
    d, t_hit = take(directions, index), take(t, index)
    length = _length(d)
    points = origin[:, None] + t_hit * d
    nb = len(on_box)

    box_ids = take(ids, on_box)
    row = take(boxes.columns, box_ids - 1)
    cos, sin, half = row[3], row[4], row[5:8]
    q = points[:, :nb] - row[0:3]
    local = torch.stack([cos * q[0] + sin * q[1], cos * q[1] - sin * q[0], q[2]])
    axis = _argmax3(local.abs() / half)
    positive = local.gather(0, axis[None])[0] > 0
    sign = torch.where(positive, 1.0, -1.0)
    x_face, y_face = axis == 0, axis == 1
    box_normal = torch.stack(
        [
            torch.where(x_face, cos, torch.where(y_face, -sin, 0.0)) * sign,
            torch.where(x_face, sin, torch.where(y_face, cos, 0.0)) * sign,
            (axis == 2) * sign,
        ]
    )
    # texture u runs along box y on x faces and along box x otherwise; v along height, or along y on top
    corner = local + half
    u_box = corner.gather(0, x_face.long()[None])[0] + row[9]
    v_box = row[10] - corner.gather(0, (2 - (axis == 2).long())[None])[0]

    ground = points[:, nb:]
    road = ground[1].abs() < scene.road_half_width
    texel = torch.cat([row[8], torch.where(road, TEXELS[ROAD], TEXELS[SIDEWALK])])
    texture = torch.cat([row[14].long(), torch.where(road, ROAD, SIDEWALK)])
    u = torch.cat([u_box, ground[0]]) / texel
    v = torch.cat([v_box, ground[1]]) / texel
    normal = torch.cat([box_normal, torch.tensor([[0.0], [0.0], [1.0]]).expand(3, len(on_ground))], 1)
    cosine = ((d * normal).sum(0).abs() / length).clamp(min=0.02)
    footprint = t_hit * length * pixel_angle / cosine.sqrt()  # geometric mean of the two axes
    colour = sample_texture(scene.atlas, texture, u, v, torch.log2(footprint / texel))

    # long-wavelength modulation in object (box) or world (ground) coordinates: nothing repeats
    phase = scene.wave_vectors @ torch.cat([local, ground], 1) + scene.wave_phases
    tint = torch.cat([row[11:14], torch.ones(3, len(on_ground))], 1)
    colour = colour * tint * (1 + 0.12 * torch.sin(phase).sum(0))
    paint = _lane_paint(scene, ground[0], ground[1], footprint[nb:].clamp(min=1e-3))
    colour[:, nb:] += paint * (0.7 - 0.7 * colour[:, nb:])
    key = torch.cat([box_ids * 8 + axis * 2 + positive, road.long()])
    return Surface(index, colour.clamp(0, 1), normal, key)


def _lane_paint(
    scene: StreetScene, x: torch.Tensor, y: torch.Tensor, footprint: torch.Tensor
) -> torch.Tensor:
    """Coverage in [0, 1] of a dashed centre line and two solid edge lines, box-filtered by the footprint."""
    period, dash, phase = scene.dash
    along = torch.remainder(x - phase, period)
    inside = torch.where(
        along < dash, torch.minimum(along, dash - along), -torch.minimum(along - dash, period - along)
    )
    dashes = (inside / footprint + 0.5).clamp(0, 1)
    centre = ((0.07 - y.abs()) / footprint + 0.5).clamp(0, 1) * dashes
    edge = ((0.08 - (y.abs() - (scene.road_half_width - 0.25)).abs()) / footprint + 0.5).clamp(0, 1)
    return torch.maximum(centre, edge)


def sky_colour(scene: StreetScene, directions: torch.Tensor, pixel_angle: float) -> torch.Tensor:
    """Sky at infinity (a function of direction only): gradient plus clouds. (3, N) directions -> (3, N)."""
    unit = directions / _length(directions)
    azimuth = torch.atan2(unit[1], unit[0])
    elevation = torch.asin(unit[2].clamp(-1, 1))
    texels_per_radian = 2 * TEXTURE_SIZE / (2 * math.pi)  # the cloud texture wraps twice around the horizon
    level = torch.full_like(azimuth, math.log2(pixel_angle * texels_per_radian))
    texture = torch.full_like(azimuth, SKY, dtype=torch.long)
    u, v = azimuth * texels_per_radian, -elevation * texels_per_radian
    clouds = sample_texture(scene.atlas, texture, u, v, level)[:1]
    blend = (elevation.clamp(min=0) / 0.5).clamp(max=1)
    gradient = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * blend
    cover = ((clouds - 0.45) * 3).clamp(0, 1)
    return gradient * (1 - cover) + cover * (0.75 + 0.3 * clouds)


def _shade_rays(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    rotation: torch.Tensor,
    rays: torch.Tensor,
    t: torch.Tensor,
    ids: torch.Tensor,
    pixel_angle: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lit colour (3, N) and surface key (N,; -1 for sky) of camera rays (3, N) with their hits."""
    directions = rotation @ rays
    surface = shade_hits(scene, boxes, origin, directions, t, ids, pixel_angle)
    light = scene.ambient + (1 - scene.ambient) * (scene.sun @ surface.normal).clamp(min=0)
    colour = torch.empty(3, t.shape[0])
    colour.index_copy_(1, surface.index, surface.albedo * light)
    sky = torch.nonzero(ids < 0).flatten()
    colour.index_copy_(1, sky, sky_colour(scene, take(directions, sky), pixel_angle))
    key = torch.full_like(ids, -1).index_copy_(0, surface.index, surface.key)
    return colour, key


# anti-aliasing of silhouettes and face/material edges: the pixel centre plus 3 subpixel offsets (x, y),
# centred, with 4 distinct x and 4 distinct y positions
SUBPIXELS = torch.tensor([[0.386, 0.104], [-0.283, 0.283], [-0.104, -0.386]])


def _edges(key: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels whose surface key differs from a 4-neighbour's."""
    edge = torch.zeros_like(key, dtype=torch.bool)
    horizontal = key[:, 1:] != key[:, :-1]
    vertical = key[1:] != key[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def _antialias_edges(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    rotation: torch.Tensor,
    intrinsics: Intrinsics,
    rays: torch.Tensor,
    ids: torch.Tensor,
    colour: torch.Tensor,
    key: torch.Tensor,
) -> None:
    """Replace the colour of edge pixels by the mean of the centre and 3 subpixel samples, in place.

    A subpixel ray is tested against the ground and the boxes hit by the centre rays of the pixel's 3x3
    neighbourhood (anything else would be thinner than a pixel and is missed by the centre rays too).
    """
    height, width = ids.shape
    edge = torch.nonzero(_edges(key.view(height, width)).flatten()).flatten()
    if edge.numel() == 0:
        return
    row, col = edge // width, edge % width
    offsets = torch.tensor([-1, 0, 1])
    rows = (row[:, None, None] + offsets[:, None]).clamp(0, height - 1)
    cols = (col[:, None, None] + offsets).clamp(0, width - 1)
    candidates = ids[rows, cols].reshape(-1, 9).sort(1).values
    fresh = torch.ones_like(candidates, dtype=torch.bool)
    fresh[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    pixel, slot = torch.nonzero(fresh & (candidates > 0), as_tuple=True)

    samples = len(SUBPIXELS)
    step = SUBPIXELS / torch.tensor([intrinsics.fx, intrinsics.fy])
    sub = take(rays, edge)[:, :, None].repeat(1, 1, samples)  # (3, E, samples)
    sub[:2] += step.T[:, None, :]
    sub = sub.reshape(3, -1)
    t = cast_ground(origin, rotation, sub, GROUND_FAR)
    sub_ids = torch.isfinite(t).long() - 1
    if pixel.numel():
        ray = (pixel[:, None] * samples + torch.arange(samples)).reshape(-1)
        box = candidates[pixel, slot].repeat_interleave(samples) - 1
        t_pair = cast_pairs(origin, rotation, take(sub, ray), boxes, box)
        t.scatter_reduce_(0, ray, t_pair, reduce="amin")
        won = torch.isfinite(t_pair) & (t_pair == t[ray])
        sub_ids[ray[won]] = box[won] + 1
    sub_colour, _ = _shade_rays(scene, boxes, origin, rotation, sub, t, sub_ids, 0.5 / intrinsics.fx)
    total = sub_colour.reshape(3, -1, samples).sum(2) + take(colour, edge)
    colour.index_copy_(1, edge, total / (samples + 1))


def render_camera(
    scene: StreetScene, frame: int, T_world_cam: np.ndarray, intrinsics: Intrinsics, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame through the pixel-centre rays of ``intrinsics``.

    Returns:
        rgb: (H, W, 3) float32 in [0, 1]; textures mip-mapped, edge pixels averaged over 4 rays if
            ``antialias``.
        depth: (H, W) float32 z-depth through pixel centres, inf for sky.
        ids: (H, W) int64 hit ids through pixel centres (-1 sky, 0 ground, b + 1 box b; dynamic boxes last).
    """
    boxes = scene.frame_boxes(frame)
    pose = torch.as_tensor(T_world_cam, dtype=torch.float32)
    pose_inv = torch.as_tensor(np.linalg.inv(T_world_cam), dtype=torch.float32)
    origin, rotation = pose[:3, 3], pose[:3, :3]
    rays = ray_grid(intrinsics.inv_K(), intrinsics.height, intrinsics.width)
    t, ids = cast_rays(origin, rotation, rays, boxes, pinhole_windows(boxes, pose_inv, intrinsics))
    flat_rays = rays.flatten(1)
    colour, key = _shade_rays(
        scene, boxes, origin, rotation, flat_rays, t.flatten(), ids.flatten(), 1 / intrinsics.fx
    )
    if antialias:
        _antialias_edges(scene, boxes, origin, rotation, intrinsics, flat_rays, ids, colour, key)
    rgb = colour.clamp(0, 1).T.reshape(intrinsics.height, intrinsics.width, 3)
    return rgb.numpy(), t.numpy(), ids.numpy()
