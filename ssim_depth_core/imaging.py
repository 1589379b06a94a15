"""Images as arrays and files: decoding, resizing, the KITTI depth PNG format and depth colouring.

The one home of these conversions, used by the data sources, the serving runtime, offline inference and the
ROS package alike, so that training and serving resize, decode and encode frames the same way.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEPTH_PNG_SCALE = 256.0  # KITTI depth-benchmark PNGs store metres * 256
MAX_PNG_DEPTH = 65535 / DEPTH_PNG_SCALE


class FrameError(ValueError):
    """A single frame could not be read (truncated file, undecodable message, missing file).

    The message names the file or bag offset; datasets skip the frame and count it.
    """


def read_file_bytes(path: Path) -> bytes:
    """The bytes of ``path``; raises :class:`FrameError` naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise FrameError(f"{path}: cannot read ({err.strerror or err})") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): not DHT (C4), JPG (C8), DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def encoded_image_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """The (width, height) a PNG (IHDR) or JPEG (start-of-frame) header declares, read without decoding;
    None when ``data`` is neither or its header is cut short."""
    head = data if isinstance(data, bytes) else np.frombuffer(data, dtype=np.uint8).tobytes()
    if head.startswith(PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b"IHDR":
            return None
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(head):  # marker segments: 0xFF, marker, 2-byte length (including itself), payload
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no payload
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if i + 9 > len(head):
                return None
            return int.from_bytes(head[i + 7 : i + 9], "big"), int.from_bytes(head[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def check_pixel_count(width: int, height: int, max_pixels: int, source: str) -> None:
    """:class:`FrameError` naming ``source``, the size and the limit when width x height > max_pixels."""
    if width * height > max_pixels:
        raise FrameError(
            f"{source}: {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
        )


def decode_image(data: bytes | np.ndarray, source: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes to an H x W x 3 uint8 RGB array.

    With ``max_pixels``, the size the header declares is checked before anything is decoded (a 50 KB PNG can
    declare 20000 x 20000 pixels, 1.2 GB decoded), and data that is not PNG or JPEG is refused.

    Raises :class:`FrameError` naming ``source`` when the bytes are empty, truncated, not an image or too
    large.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise FrameError(f"{source}: empty image data")
    if max_pixels is not None:
        size = encoded_image_size(buffer)
        if size is None:
            raise FrameError(
                f"{source}: not a PNG or JPEG with a readable header ({buffer.size} bytes); its size cannot "
                "be checked before decoding"
            )
        check_pixel_count(*size, max_pixels, f"{source} (size from its header)")
    # Some OpenCV builds decode a truncated JPEG into a grey-filled image with only a warning; a JPEG
    # without its end-of-image marker (0xFFD9, which never occurs inside entropy-coded data) is truncated.
    if buffer[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in buffer[-32:].tobytes():
        raise FrameError(f"{source}: truncated JPEG ({buffer.size} bytes, no end-of-image marker)")
    image = _imdecode(buffer, cv2.IMREAD_COLOR, source)
    if image is None:
        raise FrameError(f"{source}: cannot decode image ({buffer.size} bytes; truncated or not PNG/JPEG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _imdecode(buffer: np.ndarray, flags: int, source: str) -> np.ndarray | None:
    """``cv2.imdecode``, with OpenCV's refusals (a header declaring more than its limit of 2^30 pixels) raised
    as :class:`FrameError` naming ``source``; None where OpenCV returns None (truncated, not an image)."""
    try:
        return cv2.imdecode(buffer, flags)
    except cv2.error as err:
        size = encoded_image_size(buffer)
        declared = f", header declares {size[0]}x{size[1]} pixels" if size else ""
        message = f"cannot decode image ({buffer.size} bytes{declared}): {err.err}"
        raise FrameError(f"{source}: {message}") from None


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG file as H x W x 3 uint8 RGB; raises :class:`FrameError` naming the file."""
    return decode_image(read_file_bytes(path), str(path))


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """H x W x C uint8 -> height x width x C uint8 (area interpolation, as training and serving resize)."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def encode_depth_png(depth: np.ndarray) -> np.ndarray:
    """H x W metres (0 or non-finite = invalid) -> uint16 metres * 256 as the KITTI depth benchmark stores it.

    Depths beyond 255.996 m do not fit and are stored as invalid.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0) & (depth <= MAX_PNG_DEPTH)
    return np.where(valid, np.round(np.where(valid, depth, 0.0) * DEPTH_PNG_SCALE), 0).astype(np.uint16)


def read_depth_png(path: Path) -> np.ndarray:
    """A KITTI depth-benchmark PNG as H x W float32 metres (0 = invalid); FrameError naming the file."""
    depth = _imdecode(np.frombuffer(read_file_bytes(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED, str(path))
    if depth is None:
        raise FrameError(f"{path}: cannot decode depth PNG (truncated or not a PNG)")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise FrameError(
            f"{path}: expected a single-channel uint16 depth PNG, got {depth.dtype} {depth.shape}"
        )
    return depth.astype(np.float32) / DEPTH_PNG_SCALE


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 (H x W x 3) or single-channel uint16 image as PNG; raises naming the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), data):
        raise OSError(f"{path}: could not write PNG")


def write_depth_pngs(out_dir: Path, name: str, depth: np.ndarray) -> None:
    """Write one depth map as ``out_dir/depth/<name>`` (colourised preview) and ``out_dir/depth_raw/<name>``.

    The preview is :func:`colorize_depth`'s RGB; the raw file is :func:`encode_depth_png`'s 16-bit metres.
    """
    write_png(out_dir / "depth" / name, cv2.cvtColor(colorize_depth(depth), cv2.COLOR_BGR2RGB))
    write_png(out_dir / "depth_raw" / name, encode_depth_png(depth))


def colorize_depth(
    depth: np.ndarray,
    colormap: int = cv2.COLORMAP_MAGMA,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Colour a depth map through a perceptual colormap of its normalised inverse depth.

    Inverse depth is what a monocular network predicts and what the eye reads as structure: near objects get
    the bright end of the colormap, the far ones the dark end. Each valid pixel maps to colormap level
    ``floor(255 * (1/d - 1/far) / (1/near - 1/far))``.

    Args:
        depth: (H, W) float depth in metres; NaN, inf and values <= 0 are invalid.
        colormap: an OpenCV colormap (``cv2.COLORMAP_*``); the default, magma, is perceptually uniform.
        vmin, vmax: depths in metres shown as the brightest / darkest colour (depths outside are clipped);
            each defaults to the nearest / farthest valid depth of this map. Fix both to compare frames.

    Returns:
        (H, W, 3) uint8 BGR (OpenCV order); invalid pixels are black, an all-invalid map is all black.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) array, got shape {depth.shape}")
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite depth > 0 in metres, got {value!r}")
    if vmin is not None and vmax is not None and vmin >= vmax:
        raise ValueError(f"need vmin < vmax, got vmin={vmin}, vmax={vmax}")

    valid = np.isfinite(depth) & (depth > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / depth.astype(np.float64)
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    lo = float(inverse[valid].min()) if vmax is None else 1.0 / vmax
    hi = float(inverse[valid].max()) if vmin is None else 1.0 / vmin
    scaled = np.clip(np.where(valid, (inverse - lo) / max(hi - lo, 1e-12), 0.0), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255.0).astype(np.uint8), colormap)
    bgr[~valid] = 0
    return bgr
