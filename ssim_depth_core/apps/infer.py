"""``ssim-depth infer``: depth for every frame of an image folder, a video or a rosbag2, written to a folder.

Output folder (files of an earlier run are overwritten):
    depth/%06d.png       colourised inverse depth at the input frame's size (``visualize.colorize_depth``,
                         the function behind the node's ``depth/preview``)
    depth_raw/%06d.png   uint16 depth in metres * 256, 0 = invalid or beyond 255.99 m (KITTI depth benchmark)
    clouds/%06d.ply      with ``pointcloud="ply"``: binary PLY of the frame's points in the camera optical
                         frame, coloured by the frame (``pointcloud.depth_to_pointcloud``)
    summary.json         frame counts, skipped frames, estimator latency percentiles, model, intrinsics

``%06d`` is the frame's position in the input (sorted file list, video frame number, bag frame in header-stamp
order), so an unreadable frame leaves a gap in the numbering and every file traces back to its input.

Latency is the wall time of one :class:`~ssim_depth_core.runtime.estimator.DepthEstimator` call (resize,
network, depth conversion at the input size), measured after one untimed warm-up call; decoding and writing
are not included.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.rosbag import RosbagSequence, _fit_intrinsics, is_rosbag
from ssim_depth_core.imaging import FrameError, colorize_depth, encode_depth_png, read_image, write_png
from ssim_depth_core.runtime.estimator import DepthEstimator
from ssim_depth_core.runtime.pointcloud import depth_to_pointcloud, write_ply

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
POINTCLOUD_FORMATS = ("ply",)
GUESSED_FOCAL_RATIO = 0.58  # fx / width of KITTI's rectified colour camera (~ 81 degrees horizontal FOV)
LATENCY_PERCENTILES = (50, 90, 99)

# (name for messages, callable returning the frame as H x W x 3 uint8 RGB or raising FrameError)
Frame = tuple[str, Callable[[], np.ndarray]]


@dataclass
class _Input:
    """An opened input: its kind, frame count (None when unknown), frames, and intrinsics when it has them."""

    kind: str
    total: int | None
    frames: Iterator[Frame]
    intrinsics: Intrinsics | None = None


def guess_intrinsics(width: int, height: int) -> Intrinsics:
    """A KITTI-like pinhole camera for an uncalibrated image: fx = fy = 0.58 * width, principal point at the
    image centre (pixel centres at integer coordinates)."""
    focal = GUESSED_FOCAL_RATIO * width
    return Intrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _image_frames(paths: Sequence[Path]) -> Iterator[Frame]:
    for path in paths:
        yield str(path), functools.partial(_read_image, path)


def _read_image(path: Path) -> np.ndarray:
    return read_image(path)


def _video_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[Frame]:
    """Frames in decoding order; grab() is False at the end, retrieve() False for an undecodable frame."""
    try:
        index = 0
        while capture.grab():
            yield f"{path} frame {index}", functools.partial(_retrieve, capture, path, index)
            index += 1
    finally:
        capture.release()


def _retrieve(capture: cv2.VideoCapture, path: Path, index: int) -> np.ndarray:
    ok, bgr = capture.retrieve()
    if not ok or bgr is None:
        raise FrameError(f"{path} frame {index}: cannot decode the video frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _bag_frames(sequence: RosbagSequence) -> Iterator[Frame]:
    try:
        for index in range(len(sequence)):
            yield f"{sequence.name} frame {index}", functools.partial(sequence.image, index)
    finally:
        sequence.close()


def _open_input(path: Path, image_topic: str | None) -> _Input:
    """Classify ``path`` (rosbag2, image folder, video, single image) and start iterating its frames."""
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if is_rosbag(path):
        sequence = RosbagSequence(path, image_topic=image_topic)
        return _Input("rosbag", len(sequence), _bag_frames(sequence), sequence.intrinsics)
    if image_topic is not None:
        raise ValueError(f"{path}: --image-topic applies to rosbag2 inputs only, and this is not a rosbag2")
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(
                f"{path}: a folder with neither images ({'/'.join(IMAGE_SUFFIXES)}) nor a rosbag2 in it"
            )
        return _Input("images", len(paths), _image_frames(paths))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _Input("images", 1, _image_frames([path]))
    if suffix in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video (unsupported container or codec?)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # container's claim; may be 0 or approximate
        return _Input("video", count if count > 0 else None, _video_frames(capture, path))
    raise ValueError(
        f"{path}: unknown input type {suffix!r}; expected a folder of images, an image "
        f"({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a rosbag2 (.mcap/.db3 or "
        "bag folder)"
    )


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and mean of per-frame latencies in ms (None when there are none)."""
    keys = [f"p{p}" for p in LATENCY_PERCENTILES] + ["mean"]
    if len(latencies_ms) == 0:
        return dict.fromkeys(keys)
    values = np.asarray(latencies_ms, dtype=np.float64)
    return dict(
        zip(keys, [*np.percentile(values, LATENCY_PERCENTILES).tolist(), float(values.mean())], strict=True)
    )


def run_inference(
    model: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    backend: str = "auto",
    pointcloud: str | None = None,
    stride: int = 1,
    intrinsics: Intrinsics | Sequence[float] | None = None,
    image_topic: str | None = None,
    progress: bool = True,
) -> dict:
    """Estimate depth for every frame of ``input_path``; write it to ``out_dir`` (layout: module docstring).

    Args:
        model: ``.pt``, ``.onnx`` or ``.engine`` file.
        input_path: a folder of .png/.jpg images (sorted by name), one image, a video file (anything OpenCV
            decodes), or a rosbag2 (bag folder or .mcap/.db3 file).
        out_dir: output folder (created).
        backend: runtime backend, "auto", "tensorrt", "onnxruntime" or "torch".
        pointcloud: None, or "ply" to write one point cloud per frame.
        stride: point clouds keep every ``stride``-th pixel in both axes.
        intrinsics: camera of an image folder or video, for the point clouds: an :class:`Intrinsics`, or
            (fx, fy, cx, cy) at the first frame's resolution; frames of another size of the same aspect ratio
            get them rescaled. Default: :func:`guess_intrinsics` (with a warning). A rosbag2's intrinsics
            always come from its CameraInfo topic.
        image_topic: the rosbag2's image topic when it has several.
        progress: show a tqdm progress bar.

    Returns:
        The content of ``summary.json``: frames, skipped, skipped_frames, latency_ms (p50, p90, p99, mean),
        input, input_kind, model, backend, network_size, intrinsics (of the first cloud, or None), outputs.

    Raises:
        ValueError: bad arguments, an unreadable input, or no readable frame at all (summary.json is written
            first).
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    if pointcloud is not None and pointcloud not in POINTCLOUD_FORMATS:
        raise ValueError(f"unknown point-cloud format {pointcloud!r}; expected one of {POINTCLOUD_FORMATS}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
        if len(intrinsics) != 4:
            raise ValueError(f"intrinsics must be an Intrinsics or (fx, fy, cx, cy), got {intrinsics!r}")
        Intrinsics(*(float(v) for v in intrinsics), 1, 1)  # validates the values before any work is done

    if intrinsics is not None and is_rosbag(input_path):
        raise ValueError(
            f"{input_path}: --intrinsics is for image folders and videos; a rosbag2's camera comes from its "
            "CameraInfo topic"
        )

    source = _open_input(input_path, image_topic)
    # base: the camera at some resolution, fitted to each frame's size; None with (fx, fy, cx, cy) until the
    # first frame gives their resolution, and None for ever when guessing.
    base = source.intrinsics or (intrinsics if isinstance(intrinsics, Intrinsics) else None)
    camera_source = "camera_info" if source.intrinsics else "given" if intrinsics is not None else "guessed"
    if pointcloud is not None and camera_source == "guessed":
        logger.warning(
            "%s: no intrinsics given; the point clouds use a guessed camera (fx = fy = %.2f * width, "
            "principal point at the centre); pass --intrinsics FX FY CX CY for a true geometry",
            input_path,
            GUESSED_FOCAL_RATIO,
        )

    outputs = {"depth": out_dir / "depth", "depth_raw": out_dir / "depth_raw"}
    if pointcloud is not None:
        outputs["clouds"] = out_dir / "clouds"
    for folder in outputs.values():
        folder.mkdir(parents=True, exist_ok=True)

    estimator = DepthEstimator(model, backend=backend)
    latencies_ms: list[float] = []
    skipped: list[str] = []
    first_camera: Intrinsics | None = None
    bar = tqdm(source.frames, total=source.total, unit="frame", desc="infer", disable=not progress)
    try:
        with logging_redirect_tqdm():
            for index, (name, read) in enumerate(bar):
                try:
                    image = read()
                except FrameError as err:
                    logger.warning("skipping unreadable frame: %s", err)
                    skipped.append(name)
                    continue
                if not latencies_ms:
                    estimator(image)  # warm-up: lazy initialisation must not count as latency
                start = time.perf_counter()
                depth = estimator(image)
                latencies_ms.append((time.perf_counter() - start) * 1e3)

                file_name = f"{index:06d}.png"
                colour = cv2.cvtColor(colorize_depth(depth), cv2.COLOR_BGR2RGB)
                write_png(outputs["depth"] / file_name, colour)
                write_png(outputs["depth_raw"] / file_name, encode_depth_png(depth))
                if pointcloud is not None:
                    height, width = depth.shape
                    if base is None and intrinsics is not None:
                        base = Intrinsics(*(float(v) for v in intrinsics), width, height)
                    if base is None:
                        camera = guess_intrinsics(width, height)
                    else:
                        camera = _fit_intrinsics(base, (width, height), name)
                    first_camera = camera if first_camera is None else first_camera
                    cloud = depth_to_pointcloud(depth, camera, image, stride=stride, organized=False)
                    write_ply(outputs["clouds"] / f"{index:06d}.ply", cloud)
    finally:
        bar.close()
        source.frames.close()
        estimator.backend.close()

    summary = {
        "frames": len(latencies_ms),
        "skipped": len(skipped),
        "skipped_frames": skipped,
        "latency_ms": latency_summary(latencies_ms),
        "input": str(input_path),
        "input_kind": source.kind,
        "model": str(model),
        "backend": estimator.backend.name,
        "network_size": list(estimator.input_size),
        "intrinsics": None if first_camera is None else {"source": camera_source, **asdict(first_camera)},
        "outputs": {key: str(folder) for key, folder in outputs.items()},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not latencies_ms:
        raise ValueError(f"{input_path}: none of its {len(skipped)} frames could be read (see the warnings)")
    return summary
