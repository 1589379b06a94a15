"""Surface textures of a synthetic street: natural-image statistics, seamless, mip-mapped in one atlas.

Each texture mixes a seamless crop of one of scikit-image's bundled photos with 1/f spectral noise (facades
also get windows); :func:`sample_texture` looks them up trilinearly from a :class:`MipAtlas`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

TEXTURE_SIZE = 512
MIN_MIP_SIZE = 4

# texture slots
ROAD, SIDEWALK, FACADES, VEHICLES, FOLIAGE, BARK, SKY = 0, 1, range(2, 7), range(7, 11), 11, 12, 13
NUM_TEXTURES = 14
TEXELS = {  # metres per level-0 texel of each slot
    ROAD: 0.02,
    SIDEWALK: 0.012,
    FOLIAGE: 0.012,
    BARK: 0.006,
    **dict.fromkeys(FACADES, 0.04),
    **dict.fromkeys(VEHICLES, 0.009),
}
GRAY_PHOTOS = ("brick", "gravel", "grass", "camera", "moon", "coins", "clock", "cell")
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


def _spectral_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Periodic noise with power spectrum 1/f^beta (natural images: beta ~ 2), zero mean, unit std."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = np.fft.rfft2(rng.standard_normal((size, size))) / radius ** (beta / 2)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return noise / noise.std()


def _periodic_component(image: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition: the periodic part tiles without seams. (H, W[, C])."""
    u = image.astype(np.float64)
    v = np.zeros_like(u)
    v[0] += u[-1] - u[0]
    v[-1] += u[0] - u[-1]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    h, w = u.shape[:2]
    denom = 2 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2 * np.cos(2 * np.pi * np.arange(w) / w) - 4
    denom[0, 0] = 1.0
    if u.ndim == 3:
        denom = denom[..., None]
    smooth_hat = np.fft.fft2(v, axes=(0, 1)) / denom
    smooth_hat[0, 0] = 0.0
    return u - np.real(np.fft.ifft2(smooth_hat, axes=(0, 1)))


@functools.cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image bundled photo as float32 in [0, 1] (H x W or H x W x 3)."""
    import skimage.data  # noqa: PLC0415  (only the generator needs scikit-image)

    image = getattr(skimage.data, name)()
    return image.astype(np.float32) / 255.0


def _photo_crop(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A random, randomly rotated/flipped, seamless square crop of a photo, resized to size x size."""
    photo = _photo(name)
    h, w = photo.shape[:2]
    crop = int(rng.uniform(0.45, 1.0) * min(h, w))
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    patch = photo[y : y + crop, x : x + crop]
    interpolation = cv2.INTER_AREA if crop > size else cv2.INTER_CUBIC
    patch = cv2.resize(patch, (size, size), interpolation=interpolation)
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return _periodic_component(patch)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def _gray_material(
    rng: np.random.Generator, name: str, size: int, base: float, contrast: float
) -> np.ndarray:
    """Gray photo detail + spectral noise (fine grain, 1/f, blotches), tinted: (size, size, 3)."""
    detail = _normalise(_photo_crop(rng, name, size))
    grain = _spectral_noise(rng, size, 1.0)
    noise = _spectral_noise(rng, size, 2.0)
    blotches = _spectral_noise(rng, size, 3.5)
    gray = base * (1 + contrast * (0.6 * detail + 0.3 * grain + 0.3 * noise + 0.25 * blotches))
    tint = 1 + rng.uniform(-0.12, 0.12, 3)
    return gray[..., None] * tint


def _colour_material(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    crop = _photo_crop(rng, name, size)
    noise = _spectral_noise(rng, size, 2.0)[..., None]
    return crop * (1 + 0.15 * noise) * rng.uniform(0.8, 1.2, 3)


def _add_windows(rng: np.random.Generator, wall: np.ndarray) -> np.ndarray:
    """Bake a grid of framed windows (glass with reflections, random per-window shade) into a facade."""
    size = wall.shape[0]
    columns, rows = int(rng.integers(5, 9)), int(rng.integers(5, 8))
    width, height, sill = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.62), rng.uniform(0.45, 0.55)
    frame = rng.uniform(0.04, 0.08)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (xx * columns / size) % 1.0 - 0.5, (yy * rows / size) % 1.0 - sill
    window_id = (xx * columns // size).astype(int) + columns * (yy * rows // size).astype(int)
    outer = (np.abs(cx) < width / 2 + frame) & (np.abs(cy) < height / 2 + frame)
    inner = (np.abs(cx) < width / 2) & (np.abs(cy) < height / 2)
    reflection = 0.5 + 0.2 * _spectral_noise(rng, size, 2.5)
    shade = rng.uniform(0.3, 1.1, columns * rows)[window_id]
    glass = (0.12 + 0.22 * reflection * shade)[..., None] * rng.uniform([0.8, 0.85, 0.95], [0.95, 1.0, 1.25])
    frame_colour = rng.uniform(0.2, 0.9) * rng.uniform(0.9, 1.1, 3)
    out = np.where(outer[..., None], frame_colour, wall)
    return np.where(inner[..., None], glass, out)


def build_textures(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """The texture set of one drive: (NUM_TEXTURES, size, size, 3) float32 albedo in [0, 1], seamless."""
    textures = np.zeros((NUM_TEXTURES, size, size, 3), dtype=np.float64)
    asphalt = _gray_material(rng, "gravel", size, rng.uniform(0.25, 0.34), 0.45)
    textures[ROAD] = asphalt + 0.05 * _spectral_noise(rng, size, 1.2)[..., None]
    textures[SIDEWALK] = _gray_material(rng, str(rng.choice(["brick", "gravel", "cell"])), size, 0.5, 0.45)
    for slot in FACADES:
        wall = _gray_material(rng, str(rng.choice(GRAY_PHOTOS)), size, rng.uniform(0.35, 0.75), 0.5)
        textures[slot] = _add_windows(rng, wall * rng.uniform(0.75, 1.25, 3))
    for slot, name in zip(VEHICLES, rng.choice(COLOUR_PHOTOS, len(VEHICLES), replace=False), strict=True):
        textures[slot] = _colour_material(rng, str(name), size)
    textures[FOLIAGE] = _gray_material(rng, "grass", size, 0.3, 0.5) * [0.6, 1.1, 0.45]
    textures[BARK] = _gray_material(rng, "gravel", size, 0.22, 0.4) * [1.1, 0.9, 0.7]
    clouds = _spectral_noise(rng, size, 3.2)
    textures[SKY] = np.clip(0.5 + 0.25 * clouds, 0, 1)[..., None]
    return np.clip(textures, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class MipAtlas:
    """All mip levels of all textures packed into one image for ``grid_sample``.

    Level 0 tiles sit side by side in the top band, levels >= 1 one after another in a lower band; every tile
    has one extra (wrapped) column and row, so bilinear lookups of a tiling texture stay inside the tile.

    Attributes:
        image: (1, 3, H_atlas, W_atlas) float32.
        origins: (2, levels * textures) float32 atlas pixel (x, y) of texel (0, 0) of level l, texture t in
            column ``l * textures + t``.
    """

    image: torch.Tensor
    origins: torch.Tensor
    size: int
    levels: int
    textures: int


def build_mip_atlas(textures: np.ndarray) -> MipAtlas:
    """(T, S, S, 3) float textures (S a power of two) -> :class:`MipAtlas` with levels down to 4 x 4."""
    count, size = textures.shape[:2]
    if size & (size - 1) or textures.shape[2] != size:
        raise ValueError(f"textures must be square with a power-of-two side, got {textures.shape[1:3]}")
    pyramid = [textures]
    while pyramid[-1].shape[1] > MIN_MIP_SIZE:
        t = pyramid[-1]
        pyramid.append(t.reshape(count, t.shape[1] // 2, 2, t.shape[2] // 2, 2, 3).mean(axis=(2, 4)))
    band_width = count * sum(level.shape[1] + 1 for level in pyramid[1:])
    width = max(count * (size + 1), band_width)
    atlas = np.zeros((size + 1 + pyramid[1].shape[1] + 1, width, 3), dtype=np.float32)
    origins = np.zeros((len(pyramid), count, 2), dtype=np.float32)
    x_cursor = 0
    for level, tiles in enumerate(pyramid):
        s = tiles.shape[1]
        y0 = 0 if level == 0 else size + 1
        for index in range(count):
            x0 = index * (size + 1) if level == 0 else x_cursor
            padded = np.pad(tiles[index], ((0, 1), (0, 1), (0, 0)), mode="wrap")
            atlas[y0 : y0 + s + 1, x0 : x0 + s + 1] = padded
            origins[level, index] = (x0, y0)
            if level > 0:
                x_cursor += s + 1
    # channels-last: the three channels of a texel share a cache line (halves the cost of scattered lookups)
    image = (
        torch.from_numpy(atlas).permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    )
    return MipAtlas(image, torch.from_numpy(origins.reshape(-1, 2).T.copy()), size, len(pyramid), count)


def sample_texture(
    atlas: MipAtlas, texture: torch.Tensor, u: torch.Tensor, v: torch.Tensor, level: torch.Tensor
) -> torch.Tensor:
    """Trilinear, wrapping texture lookup.

    Args:
        texture: (N,) int64 texture index.
        u, v: (N,) float texel coordinates at level 0 (texel k covers [k, k + 1)); any real value, wraps.
        level: (N,) float mip level (log2 of the footprint in level-0 texels), clamped to the pyramid.

    Returns:
        (3, N) colours.
    """
    n = u.shape[0]
    level = level.clamp(0, atlas.levels - 1)
    lower = level.floor()
    frac = level - lower
    levels = torch.cat([lower, (lower + 1).clamp(max=atlas.levels - 1)])
    scale = torch.exp2(-levels)
    side = atlas.size * scale
    x = torch.remainder(u.repeat(2) * scale - 0.5, side)
    y = torch.remainder(v.repeat(2) * scale - 0.5, side)
    origin = torch.index_select(atlas.origins, 1, levels.long() * atlas.textures + texture.repeat(2))
    height, width = atlas.image.shape[-2:]
    gx = (x + origin[0] + 0.5) * (2.0 / width) - 1.0
    gy = (y + origin[1] + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack([gx, gy], -1).view(1, 1, 2 * n, 2)
    colours = F.grid_sample(atlas.image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    colours = colours.reshape(3, 2 * n)
    return torch.lerp(colours[:, :n], colours[:, n:], frac)
