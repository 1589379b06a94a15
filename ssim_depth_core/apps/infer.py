"""``ssim-depth infer``: depth for every frame of an image folder, a video or a rosbag2, written to a folder.

Every frame goes through the serving frame pipeline (:class:`~ssim_depth_core.runtime.frames.FramePipeline`,
the one behind the ROS node). Output folder (a folder holding any of these from an earlier run is refused
unless ``overwrite``, which removes exactly these, and only once the model and the input have opened; other
files in the folder stay):
    depth/NAME.png       colourised inverse depth at the input frame's size (``imaging.colorize_depth``, the
                         function behind the node's ``depth/preview``)
    depth_raw/NAME.png   uint16 depth in metres * 256, 0 = invalid or beyond 255.99 m (KITTI depth benchmark)
    clouds/NAME.ply      with ``pointcloud="ply"``: binary PLY of the frame's points in the camera optical
                         frame, coloured by the frame (``pointcloud.depth_to_pointcloud``)
    summary.json         frame counts, skipped and withheld frames, latency percentiles, model, intrinsics,
                         the scale source and statistics of the scales applied, and ``frame_sources``: for
                         every NAME the input it came from and the scale applied to its depth

NAME is the input file's name without its suffix for images (``images/0000000012.png`` ->
``depth/0000000012.png``), and the frame's position ``%06d`` for a video (decoding order) or a rosbag2
(header-stamp order), whose ``frame_sources`` entries give the video frame index, or the bag topic and
header stamp. An unreadable frame is skipped (named in ``skipped_frames``) and writes nothing.

Metres come from the pipeline's scale source (``ScaleSettings``, default "model": a metric model, a scale-less
one is refused): "fixed" multiplies by ``depth_scale``, "camera_height" fits the ground plane in every frame
(through the frame's camera: the bag's CameraInfo, ``intrinsics``, or the guessed one, with a warning that the
scale is then only as good as the guess). A frame with no ground-plane scale yet is withheld: named with the
reason in ``withheld_frames``, it writes nothing.

Latency is the wall time of one frame through the frame pipeline (inference at the input size, plus the point
cloud when written), measured after one untimed warm-up frame; decoding and writing are not included.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.data.rosbag import NO_ODOMETRY, RosbagSequence, is_rosbag
from ssim_depth_core.errors import not_found
from ssim_depth_core.imaging import FrameError, read_image, write_depth_pngs
from ssim_depth_core.outputs import earlier_outputs, remove_outputs
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.frames import FrameOptions, FramePipeline, ModelSettings, ScaleSettings
from ssim_depth_core.runtime.latency import latency_stats
from ssim_depth_core.runtime.pointcloud import write_ply

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
POINTCLOUD_FORMATS = ("ply",)
GUESSED_FOCAL_RATIO = 0.58  # fx / width of KITTI's rectified colour camera (~ 81 degrees horizontal FOV)
LATENCY_PERCENTILES = (50, 90, 99)
OUTPUTS = ("depth", "depth_raw", "clouds", "summary.json")  # what a run writes into its output folder


class Frame(NamedTuple):
    """One input frame, not yet read."""

    label: str  # names the frame in messages and skipped_frames
    name: str  # stem of its output files
    source: dict[str, str | int | float]  # where it came from, for summary.json's frame_sources
    read: Callable[[], np.ndarray]  # returns (H, W, 3) uint8 RGB or raises FrameError


@dataclass
class _Input:
    """An opened input: its kind, frame count (None when unknown), frames, intrinsics when it has them, and
    what releases it (also when its frames were never iterated)."""

    kind: str
    total: int | None
    frames: Iterator[Frame]
    intrinsics: Intrinsics | None = None
    close: Callable[[], None] = lambda: None


def guess_intrinsics(width: int, height: int) -> Intrinsics:
    """A KITTI-like pinhole camera for an uncalibrated image: fx = fy = 0.58 * width, principal point at the
    image centre (pixel centres at integer coordinates)."""
    focal = GUESSED_FOCAL_RATIO * width
    return Intrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _image_frames(paths: Sequence[Path]) -> Iterator[Frame]:
    for path in paths:
        yield Frame(str(path), path.stem, {"file": str(path)}, functools.partial(read_image, path))


def _check_unique_names(paths: Sequence[Path], folder: Path) -> None:
    """Raise when two images would write the same output files (same name, different suffixes)."""
    first: dict[str, Path] = {}
    for path in paths:
        other = first.setdefault(path.stem, path)
        if other is not path:
            raise ValueError(
                f"{folder}: {other.name} and {path.name} would both write depth/{path.stem}.png; "
                "move one of them out of the folder"
            )


def _video_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[Frame]:
    """Frames in decoding order; grab() is False at the end, retrieve() False for an undecodable frame."""
    try:
        index = 0
        while capture.grab():
            read = functools.partial(_retrieve, capture, path, index)
            yield Frame(f"{path} frame {index}", f"{index:06d}", {"frame": index}, read)
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
            source = {"topic": sequence.image_topic, "stamp_s": float(sequence.timestamps[index])}
            read = functools.partial(sequence.image, index)
            yield Frame(f"{sequence.name} frame {index}", f"{index:06d}", source, read)
    finally:
        sequence.close()


def _open_input(path: Path, image_topic: str | None) -> _Input:
    """Classify ``path`` (rosbag2, image folder, video, single image) and start iterating its frames."""
    if not path.exists():
        raise not_found("input", path)
    if is_rosbag(path):
        # Inference reads no odometry: a bag with several odometry topics must not stop it.
        sequence = RosbagSequence(path, image_topic=image_topic, odometry_topic=NO_ODOMETRY)
        return _Input("rosbag", len(sequence), _bag_frames(sequence), sequence.intrinsics, sequence.close)
    if image_topic is not None:
        raise ValueError(f"{path}: --image-topic applies to rosbag2 inputs only, and this is not a rosbag2")
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(
                f"{path}: a folder with neither images ({'/'.join(IMAGE_SUFFIXES)}) nor a rosbag2 in it"
            )
        _check_unique_names(paths, path)
        return _Input("images", len(paths), _image_frames(paths))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _Input("images", 1, _image_frames([path]))
    if suffix in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video (unsupported container or codec?)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # container's claim; may be 0 or approximate
        total = count if count > 0 else None
        return _Input("video", total, _video_frames(capture, path), close=capture.release)
    raise ValueError(
        f"{path}: unknown input type {suffix!r}; expected a folder of images, an image "
        f"({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a rosbag2 (.mcap/.db3 or "
        "bag folder)"
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
    scale: ScaleSettings | None = None,
    overwrite: bool = False,
) -> dict:
    """Estimate depth for every frame of ``input_path``; write it to ``out_dir`` (layout: module docstring).

    Args:
        model: ``.pt``, ``.onnx`` or ``.engine`` file.
        input_path: a folder of .png/.jpg images (sorted by name), one image, a video file (anything OpenCV
            decodes), or a rosbag2 (bag folder or .mcap/.db3 file).
        out_dir: output folder (created). One holding an earlier run's outputs (:data:`OUTPUTS`) is refused
            unless ``overwrite``.
        backend: runtime backend, "auto", "tensorrt", "onnxruntime" or "torch".
        pointcloud: None, or "ply" to write one point cloud per frame.
        stride: point clouds keep every ``stride``-th pixel in both axes (a positive integer).
        intrinsics: camera of an image folder or video, for the point clouds: an :class:`Intrinsics`, or
            (fx, fy, cx, cy) at the first frame's resolution; frames of another size of the same aspect ratio
            get them rescaled. Default: :func:`guess_intrinsics` (with a warning). A rosbag2's intrinsics
            always come from its CameraInfo topic.
        image_topic: the rosbag2's image topic when it has several.
        progress: show a tqdm progress bar.
        scale: where the metric scale comes from (module docstring); None = ``ScaleSettings()``, "model".
        overwrite: replace an earlier run in ``out_dir``: its :data:`OUTPUTS` are removed once the model and
            the input have opened (a run refused before then loses nothing); other files stay.

    Returns:
        The content of ``summary.json``: frames, skipped, skipped_frames, withheld, withheld_frames ({"name",
        "reason"} of frames without a ground-plane scale), latency_ms (p50, p90, p99, mean), input,
        input_kind, model, backend, network_size, intrinsics (of the first frame with a camera, or None),
        scale ({"source", and "min", "median", "max" of the scales applied, None without any}), outputs,
        frame_sources (one dict per written frame: its output ``name``, the ``scale`` applied, and ``file``,
        or video ``frame`` index, or bag ``topic`` and header ``stamp_s``).

    Raises:
        ValueError: bad arguments, an ``out_dir`` holding an earlier run without ``overwrite`` (nothing is
            created or removed then), a scale source that refuses the model, an unreadable input, or no
            readable frame at all (summary.json is written first).
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    scale = scale or ScaleSettings()
    if pointcloud is not None and pointcloud not in POINTCLOUD_FORMATS:
        raise ValueError(f"unknown point-cloud format {pointcloud!r}; expected one of {POINTCLOUD_FORMATS}")
    options = FrameOptions(points=pointcloud is not None, point_stride=stride, organized_points=False)
    if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
        if len(intrinsics) != 4:
            raise ValueError(f"intrinsics must be an Intrinsics or (fx, fy, cx, cy), got {intrinsics!r}")
        Intrinsics.check_values(*(float(v) for v in intrinsics))  # before any work is done

    if intrinsics is not None and is_rosbag(input_path):
        raise ValueError(
            f"{input_path}: --intrinsics is for image folders and videos; a rosbag2's camera comes from its "
            "CameraInfo topic"
        )

    inputs = {"--input": input_path, "--model": model}
    earlier = earlier_outputs(out_dir, OUTPUTS, overwrite, "run of ssim-depth infer", inputs)
    source = _open_input(input_path, image_topic)
    try:
        pipeline = FramePipeline(ModelSettings(model, backend, scale=scale))  # before any file is touched
    except BaseException:
        source.close()
        raise
    # base: the camera at some resolution, fitted to each frame's size; None with (fx, fy, cx, cy) until the
    # first frame gives their resolution, and None for ever when guessing.
    base = source.intrinsics or (intrinsics if isinstance(intrinsics, Intrinsics) else None)
    camera_source = "camera_info" if source.intrinsics else "given" if intrinsics is not None else "guessed"
    needs_camera = pointcloud is not None or scale.source == "camera_height"
    if needs_camera and camera_source == "guessed":
        logger.warning(
            "%s: no intrinsics given; the point clouds and the ground-plane scale use a guessed camera "
            "(fx = fy = %.2f * width, principal point at the centre); pass --intrinsics FX FY CX CY for a "
            "true geometry",
            input_path,
            GUESSED_FOCAL_RATIO,
        )

    outputs = {"depth": out_dir / "depth", "depth_raw": out_dir / "depth_raw"}
    if pointcloud is not None:
        outputs["clouds"] = out_dir / "clouds"
    latencies_ms: list[float] = []
    skipped: list[str] = []
    withheld: list[dict[str, str]] = []
    sources: list[dict] = []
    first_camera: Intrinsics | None = None
    bar = None
    try:
        if earlier:  # only now: a run refused before this point leaves the earlier one as it was
            remove_outputs(out_dir, earlier)
            logger.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(earlier), out_dir)
        for folder in outputs.values():
            folder.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(
            source.frames, total=source.total, unit="frame", desc="infer", disable=not progress
        )
        with logging_redirect_tqdm():
            for frame in bar:
                try:
                    image = frame.read()
                except FrameError as err:
                    logger.warning("skipping unreadable frame: %s", err)
                    skipped.append(frame.label)
                    continue
                camera = None
                if needs_camera:
                    height, width = image.shape[:2]
                    if base is None and intrinsics is not None:
                        base = Intrinsics(*(float(v) for v in intrinsics), width, height)
                    if base is None:
                        camera = guess_intrinsics(width, height)
                    else:
                        camera = base.fitted(width, height, source=frame.label)
                if not latencies_ms:
                    pipeline(image, camera, options)  # warm-up: lazy initialisation must not count as latency
                    if pipeline.ground is not None:
                        pipeline.ground.reset()  # the warm-up frame must not count twice in the smoothing
                start = time.perf_counter()
                result = pipeline(image, camera, options)
                latencies_ms.append((time.perf_counter() - start) * 1e3)

                if first_camera is None:
                    first_camera = result.intrinsics
                if result.depth is None:
                    reason = result.ground.reason
                    logger.warning("withholding %s: no ground-plane scale (%s)", frame.label, reason)
                    withheld.append({"name": frame.name, "reason": reason})
                    continue
                write_depth_pngs(out_dir, f"{frame.name}.png", result.depth)
                if result.cloud is not None:
                    write_ply(outputs["clouds"] / f"{frame.name}.ply", result.cloud)
                sources.append({"name": frame.name, "scale": result.scale, **frame.source})
    finally:
        if bar is not None:
            bar.close()
        source.frames.close()
        source.close()
        pipeline.close()

    latency = latency_stats(latencies_ms, LATENCY_PERCENTILES)
    estimator = pipeline.estimator
    scales = [entry["scale"] for entry in sources]
    spread = {"min": min(scales), "median": float(np.median(scales)), "max": max(scales)} if scales else {}
    summary = {
        "frames": len(latencies_ms),
        "skipped": len(skipped),
        "skipped_frames": skipped,
        "withheld": len(withheld),
        "withheld_frames": withheld,
        "latency_ms": {
            **{f"p{p}": value for p, value in latency.percentiles.items()},
            "mean": latency.mean,
        },
        "input": str(input_path),
        "input_kind": source.kind,
        "model": str(model),
        "backend": estimator.backend.name,
        "network_size": list(estimator.input_size),
        "intrinsics": None if first_camera is None else {"source": camera_source, **asdict(first_camera)},
        "scale": {
            "source": scale.source,
            **dict.fromkeys(("min", "median", "max")),
            **spread,
        },
        "outputs": {key: str(folder) for key, folder in outputs.items()},
        "frame_sources": sources,
    }
    write_atomic(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    if not latencies_ms:
        raise ValueError(f"{input_path}: none of its {len(skipped)} frames could be read (see the warnings)")
    return summary
