"""sensor_msgs <-> NumPy conversions: every message conversion of the package, both ways.

Colour images are decoded by the library's message decoder (:func:`ssim_depth_core.data.rosbag.
image_from_message`), the one training uses on recorded bags, so a frame decodes identically when served
and when trained on. ``cv_bridge`` is not needed; where it is installed, ``test/test_ros_codecs.py`` checks
that it decodes to the same arrays. Every malformed message raises :class:`ImageDecodeError` (a
ValueError for PointCloud2 and CameraInfo) naming the field and what was expected.

libjpeg and libpng print a line to stderr for every corrupt image they are given (``Corrupt JPEG data: ...``,
``libpng error: ...``), which no logger throttles: a broken camera at 30 Hz would write 30 such lines a
second. While a CompressedImage is decoded, file descriptor 2 therefore points to a temporary file; the
decoder's lines go into the :class:`ImageDecodeError` (which the node logs, throttled; a successful decode's
benign warnings, e.g. libpng's about colour profiles, are dropped), and another thread's log line or Python
output written meanwhile is written to stderr afterwards. A JPEG that decodes
with a warning about its data (libjpeg fills the part it could not decode with grey, e.g. a truncated file
with an end-of-image marker appended: "Corrupt JPEG data: premature end of data segment"; or decodes garbage:
"Invalid SOS parameters for sequential JPEG") is refused like one that does not decode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header, String

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.rosbag import image_from_message
from ssim_depth_core.runtime.frames import FrameOptions, ModelSettings
from ssim_depth_core.runtime.pointcloud import FLOAT32, PointCloudData


class ImageDecodeError(ValueError):
    """A sensor_msgs image that cannot be decoded; the message says which field is wrong and why."""


# what is not the decoder's among the lines written to stderr while an image is decoded: another thread's log
# line (rcutils format, coloured or not: RCUTILS_COLORIZED_OUTPUT, which ros2 launch turns on in a terminal)
# or Python output (a traceback, a warning); libjpeg alone has ~130 message texts
_NOT_DECODER_LINE = re.compile(
    r"^(?:\x1b\[[0-9;]*m)*(\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[|Traceback |\s|\S+\.py:\d+: )"
)
# a decoded image with one of these is damaged: libjpeg's warnings about the data (libjpeg-turbo jerror.h
# JWRN_*: all but an unknown JFIF revision or Adobe transform); libpng's warnings are benign (profiles)
_CORRUPT_LINE = re.compile(
    r"^(Corrupt JPEG|Premature end of JPEG|Invalid SOS|Inconsistent progression|Application transferred too "
    r"many|libpng error)"
)
_capture_lock = threading.Lock()
_capture_file = None


@contextlib.contextmanager
def _native_stderr(said: list[str]) -> Iterator[None]:
    """Inside, what native code writes to stderr goes to a temporary file; afterwards the decoder's lines are
    appended to ``said``, and log lines and Python output (:data:`_NOT_DECODER_LINE`) go to stderr."""
    global _capture_file
    with _capture_lock:
        try:
            if _capture_file is None:
                _capture_file = tempfile.TemporaryFile()
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable stderr: nothing to keep quiet
            yield
            return
        os.dup2(_capture_file.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            _capture_file.seek(0)
            text = _capture_file.read().decode(errors="replace")
            _capture_file.seek(0)
            _capture_file.truncate()
            others = []
            for line in text.splitlines():
                (others if _NOT_DECODER_LINE.match(line) else said).append(line)
            if others:
                os.write(2, ("\n".join(others) + "\n").encode())


def image_msg_to_rgb(msg: Image | CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """Decode an Image (rgb8, bgr8, rgba8, bgra8, mono8; row padding honoured) or a CompressedImage
    (JPEG/PNG) to (H, W, 3) uint8 RGB. Alpha is dropped, mono replicated to three channels.

    ``max_pixels`` bounds the size (:func:`ssim_depth_core.data.rosbag.image_from_message`).
    """
    if isinstance(msg, CompressedImage):  # decoder messages: see the module docstring
        said: list[str] = []
        try:
            with _native_stderr(said):
                rgb = image_from_message(msg, max_pixels)
        except ValueError as err:
            detail = f" (decoder: {'; '.join(said)})" if said else ""
            raise ImageDecodeError(f"{err}{detail}") from None
        corrupt = [line for line in said if _CORRUPT_LINE.match(line)]
        if corrupt:  # libjpeg fills what it could not decode with grey, and only warns
            raise ImageDecodeError(
                f"CompressedImage ({msg.format or 'no format'}): corrupt image data ({len(msg.data)} bytes; "
                f"decoder: {'; '.join(corrupt)})"
            )
        return rgb
    what = f"Image {msg.width}x{msg.height} {msg.encoding or '(no encoding)'}"
    try:
        if msg.height == 0 or msg.width == 0:
            raise ValueError("empty image (zero width or height)")
        return image_from_message(msg, max_pixels)
    except ValueError as err:
        raise ImageDecodeError(f"{what}: {err}") from None


def stamp_ns(msg) -> int:
    """The header stamp of a message in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _check_layout(msg: Image, bytes_per_pixel: int) -> None:
    """Validate size, step and data length of a raw (depth) image message."""
    if msg.height == 0 or msg.width == 0:
        raise ImageDecodeError(f"empty image: {msg.width}x{msg.height} ({msg.encoding})")
    row_bytes = msg.width * bytes_per_pixel
    if msg.step < row_bytes:
        raise ImageDecodeError(
            f"step {msg.step} is smaller than width * bytes per pixel = {msg.width} * {bytes_per_pixel}"
        )
    if len(msg.data) != msg.height * msg.step:
        raise ImageDecodeError(
            f"data length {len(msg.data)} != height*step = {msg.height}*{msg.step} = {msg.height * msg.step}"
        )


def _image_msg(array: np.ndarray, header: Header, encoding: str) -> Image:
    """Wrap a C-contiguous (H, W[, C]) array as an unpadded Image in native byte order."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big" and array.dtype.itemsize > 1)
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg


def depth_to_image_msg(depth: np.ndarray, header: Header) -> Image:
    """(H, W) depth in metres (NaN = invalid, REP 117) -> 32FC1 Image with ``header``."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    return _image_msg(depth.astype(np.float32, copy=False), header, "32FC1")


def image_msg_to_depth(msg: Image) -> np.ndarray:
    """32FC1 Image -> (H, W) float32 in native byte order; honours ``step`` and ``is_bigendian``."""
    if msg.encoding != "32FC1":
        raise ImageDecodeError(f"unsupported depth encoding '{msg.encoding}'; expected 32FC1")
    _check_layout(msg, 4)
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 4]
    return np.ascontiguousarray(rows).view(">f4" if msg.is_bigendian else "<f4").astype(np.float32)


def preview_image_msg(preview: np.ndarray, header: Header) -> Image:
    """(H, W, 3) uint8 BGR preview (:func:`ssim_depth_core.imaging.colorize_depth`) -> bgr8 Image."""
    if preview.ndim != 3 or preview.shape[2] != 3 or preview.dtype != np.uint8:
        raise ValueError(f"preview must be (H, W, 3) uint8 BGR, got {preview.dtype} of shape {preview.shape}")
    return _image_msg(preview, header, "bgr8")


def cloud_to_pointcloud2_msg(cloud: PointCloudData, header: Header) -> PointCloud2:
    """A :class:`PointCloudData` as PointCloud2 with ``header`` (its bytes and field table as they are)."""
    return PointCloud2(
        header=header,
        height=cloud.height,
        width=cloud.width,
        fields=[
            PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in cloud.fields
        ],
        is_bigendian=False,
        point_step=cloud.point_step,
        row_step=cloud.row_step,
        data=cloud.tobytes(),
        is_dense=cloud.is_dense,
    )


def pointcloud2_msg_to_cloud(msg: PointCloud2) -> PointCloudData:
    """The x, y, z (and rgb) fields of a little-endian float32 PointCloud2 as :class:`PointCloudData`;
    other fields are skipped."""
    fields = {f.name: f for f in msg.fields if f.name in ("x", "y", "z", "rgb")}
    problem = None
    if msg.is_bigendian:
        problem = "big-endian data"
    elif not {"x", "y", "z"} <= fields.keys():
        problem = f"fields {[f.name for f in msg.fields]} lack one of x, y, z"
    elif any(f.datatype != FLOAT32 or f.count != 1 for f in fields.values()):
        problem = "x, y, z and rgb must be single FLOAT32 (datatype 7) values"
    elif msg.row_step != msg.point_step * msg.width or len(msg.data) != msg.row_step * msg.height:
        problem = (
            f"data length {len(msg.data)}, row_step {msg.row_step} do not match {msg.height} rows of "
            f"{msg.width} points of {msg.point_step} bytes"
        )
    if problem:
        raise ValueError(f"PointCloud2 ({msg.width}x{msg.height}): {problem}")
    dtype = np.dtype(
        {
            "names": list(fields),
            "formats": ["<f4"] * len(fields),
            "offsets": [f.offset for f in fields.values()],
            "itemsize": msg.point_step,
        }
    )
    points = np.frombuffer(msg.data, dtype=dtype).reshape(msg.height, msg.width)
    return PointCloudData(points=points, is_dense=bool(msg.is_dense))


def intrinsics_from_camera_info(info: CameraInfo, width: int, height: int) -> Intrinsics:
    """The pinhole camera of ``info`` (P when set, else K) at the CameraInfo's image size, or at ``width`` x
    ``height`` (the image's) when that size is 0, as some drivers leave it.

    Raises:
        ValueError: K and P are both all zeros (an uncalibrated camera), or malformed.
    """
    sized = info.width > 0 and info.height > 0
    return Intrinsics.from_camera_info(
        info.k, info.width if sized else width, info.height if sized else height, info.p
    )


def scaled_camera_info(info: CameraInfo, width: int, height: int, header: Header) -> CameraInfo:
    """``info`` resampled to ``width`` x ``height`` (a plain resize, :meth:`Intrinsics.scaled`'s convention).

    K and P are rescaled (P's Tx, Ty with the focal lengths); D and R are kept. A driver that sets only one of
    K and P describes a rectified camera with it, so the other is filled from it (P with no translation):
    readers of K and of P (image_geometry) both find the camera the depth was computed with.

    Raises:
        ValueError: ``info`` has no image size, or neither K nor P is set.
    """
    if info.width == 0 or info.height == 0:
        raise ValueError(f"CameraInfo has no image size ({info.width}x{info.height}); cannot scale it")
    k, p = (
        np.asarray(info.k, dtype=np.float64).reshape(3, 3),
        np.asarray(info.p, dtype=np.float64).reshape(3, 4),
    )
    if not k.any() and not p.any():
        raise ValueError("CameraInfo has neither K nor P set (all zeros): the camera is uncalibrated")
    if not k.any():
        k = p[:, :3]
    if not p.any():
        p = np.hstack([k, np.zeros((3, 1))])
    out = CameraInfo()
    out.header = header
    out.width, out.height = int(width), int(height)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = info.r
    out.k = Intrinsics.from_matrix(k, info.width, info.height).scaled(width, height).matrix.ravel()
    scaled = Intrinsics.from_matrix(p, info.width, info.height).scaled(width, height)
    translation = p[:, 3] * [width / info.width, height / info.height, 1.0]
    out.p = np.hstack([scaled.matrix, translation[:, None]]).ravel()
    return out


def camera_info_from_intrinsics(intrinsics: Intrinsics, header: Header) -> CameraInfo:
    """A distortion-free CameraInfo for pinhole ``intrinsics`` (K and P filled, R identity)."""
    info = CameraInfo()
    info.header = header
    info.width, info.height = intrinsics.width, intrinsics.height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = intrinsics.matrix.ravel()
    info.r = np.eye(3).ravel()
    info.p = np.hstack([intrinsics.matrix, np.zeros((3, 1))]).ravel()
    return info


def model_info_msg(
    model: dict, settings: ModelSettings, options: FrameOptions, header: Header, outputs: Sequence[str]
) -> String:
    """The depth/model tag of one frame: a one-line JSON object naming the frame (``stamp``: {sec, nanosec},
    ``frame_id``: the input header, as on every output of the frame), the estimator that made it (``model``:
    generation, model_path, model_sha256, backend, input_size, metric), its ``settings``
    (:class:`ModelSettings`), the frame's ``options`` (:class:`FrameOptions`) and the ``outputs`` the node
    publishes for it after the tag (of "depth", "points", "preview": a subscriber knows what else to wait
    for; no "depth" = withheld)."""
    text = {
        "stamp": {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec},
        "frame_id": header.frame_id,
        "model": model,
        "settings": dataclasses.asdict(settings),
        "options": dataclasses.asdict(options),
        "outputs": list(outputs),
    }
    return String(data=json.dumps(text, separators=(",", ":")))


def parse_model_info(msg: String) -> dict:
    """A depth/model message (:func:`model_info_msg`) as a dict; ValueError when it is not one."""
    try:
        info = json.loads(msg.data)
    except json.JSONDecodeError as error:
        raise ValueError(f"depth/model: not JSON: {error}") from None
    missing = {"stamp", "frame_id", "model", "settings", "options", "outputs"} - set(
        info if isinstance(info, dict) else ()
    )
    if missing:
        raise ValueError(f"depth/model: no {sorted(missing)} in {msg.data[:200]!r}")
    if not isinstance(info["outputs"], list):
        raise ValueError(f"depth/model: outputs must be a list of topic names, got {info['outputs']!r}")
    return info
