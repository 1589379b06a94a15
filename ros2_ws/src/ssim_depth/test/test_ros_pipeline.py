"""The serving pipeline end to end: synthetic drive bag -> depth node (a real process) -> recorded files.

A randomly initialised 64x96 network is exported to ONNX; the bag is the synthetic renderer's MCAP. The
recorded depth is checked against the bare DepthEstimator on the bag's frame with the same stamp, the PLY
(read back by Open3D) against the pinhole back-projection written out here, the latency statistics against
numpy over the per-frame file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")

from ssim_depth.tools.pipeline import PipelineError, run_pipeline
from ssim_depth.tools.pipeline import main as pipeline_main
from ssim_depth.tools.record import claim_output

from ssim_depth_core.data.rosbag import RosbagSequence
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.imaging import colorize_depth
from ssim_depth_core.runtime import DepthEstimator

FRAMES, WIDTH, HEIGHT = 6, 128, 64
POINT_STRIDE = 2  # the node's default
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def model(velocity_onnx):
    """A metric model, as ``make demo`` serves: the node's default scale source ``model`` accepts it."""
    return velocity_onnx


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A stereo drive's bag (two image topics): the pipeline plays the left camera, the stereo pair's
    reference, as training and ``ssim-depth infer`` choose it, and RosbagSequence reads that one below."""
    root = generate_dataset(
        tmp_path_factory.mktemp("pipeline_data"), seed=5, drives=1, frames=FRAMES, width=WIDTH, height=HEIGHT,
        bag="mcap", progress=False, stereo=True,
    )  # fmt: skip
    (path,) = (root / "bags").iterdir()
    return path


@pytest.fixture(scope="module")
def served(model, bag, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline_run")
    summary = run_pipeline(model, bag, out, rate=1.0, backend="onnxruntime", timeout=TIMEOUT)
    return out, summary


@pytest.fixture(scope="module")
def frames(served):
    """frames.csv rows as (index, stamp_ns, latency_ms or None)."""
    with open(served[0] / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    latency = lambda text: float(text) if text else None  # noqa: E731
    return [(int(r["index"]), int(r["stamp_ns"]), latency(r["latency_ms"])) for r in rows]


def bag_frame(sequence: RosbagSequence, stamp_ns: int) -> np.ndarray:
    """The bag's image with header stamp ``stamp_ns``."""
    index = int(np.argmin(np.abs(sequence.timestamps - stamp_ns * 1e-9)))
    assert abs(sequence.timestamps[index] - stamp_ns * 1e-9) < 1e-6, f"no bag frame at stamp {stamp_ns}"
    return sequence.image(index)


def test_depth_images_equal_the_estimator_on_the_bag_frames(served, frames, model, bag):
    out, summary = served
    assert summary["node_exit_code"] == 0  # stopped cleanly by SIGINT
    assert 0 < summary["frames_received"] == len(frames) <= FRAMES
    assert [index for index, _, _ in frames] == list(range(len(frames)))
    # The node is idle when the first frame comes, so it can only miss it if playback started before the
    # node's subscription had matched the player (DDS drops such samples): the pipeline must prevent that.
    assert abs(frames[0][1] * 1e-9 - RosbagSequence(bag).timestamps[0]) < 1e-6
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{i:06d}.png" for i, _, _ in frames]
    assert sorted(p.name for p in (out / "depth_raw").iterdir()) == [f"{i:06d}.png" for i, _, _ in frames]

    estimator = DepthEstimator(model, backend="onnxruntime", device="cpu")
    sequence = RosbagSequence(bag)
    for index, stamp, _ in frames:
        expected = estimator(bag_frame(sequence, stamp))
        raw = cv2.imread(str(out / "depth_raw" / f"{index:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (HEIGHT, WIDTH)
        np.testing.assert_allclose(raw / 256.0, expected, atol=0.5 / 256 + 1e-5)  # rounded to 1/256 m
        colour = cv2.imread(str(out / "depth" / f"{index:06d}.png"), cv2.IMREAD_COLOR)
        reference = colorize_depth(expected)  # the node's preview colouring, on the reference depth
        # equal up to pixels where the node's and this process's depths (rtol 1e-5) straddle a colour step
        equal = np.all(colour == reference, axis=2)
        assert equal.mean() > 0.999 and np.abs(colour.astype(int) - reference).max() <= 8


def test_point_cloud_is_the_back_projected_last_frame(served, model, bag):
    o3d = pytest.importorskip("open3d")
    out, summary = served
    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    points, colours = np.asarray(cloud.points), np.asarray(cloud.colors)
    assert len(points) == summary["points"]["count"] > 0

    sequence = RosbagSequence(bag)
    image = bag_frame(sequence, summary["points"]["stamp_ns"])
    depth = DepthEstimator(model, backend="onnxruntime", device="cpu")(image)
    k = sequence.intrinsics  # the bag's CameraInfo, at the image resolution
    v, u = np.mgrid[0:HEIGHT:POINT_STRIDE, 0:WIDTH:POINT_STRIDE]
    z = depth[::POINT_STRIDE, ::POINT_STRIDE]
    assert len(points) == z.size  # every pixel has a finite depth inside the model's range
    expected = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(points, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(colours * 255, image[::POINT_STRIDE, ::POINT_STRIDE].reshape(-1, 3), atol=1e-3)


def test_latency_statistics(served, frames):
    out, summary = served
    stats = json.loads((out / "latency.json").read_text())
    assert {k: summary[k] for k in stats} == stats
    assert stats["frames_published"] == FRAMES == summary["frames_in_bag"]  # every image was heard
    assert stats["frames_received"] + stats["dropped"] == stats["frames_published"]
    # a metric model: every frame the node tagged on depth/model has its depth
    assert stats["frames_processed"] == stats["frames_received"] and stats["withheld"] == 0
    assert stats["failed"] == 0
    latencies = np.array([latency for _, _, latency in frames if latency is not None])
    assert stats["count"] == latencies.size == len(frames)
    assert np.all(latencies > 0)
    np.testing.assert_allclose(
        [stats["mean_ms"], stats["p50_ms"], stats["p95_ms"], stats["max_ms"]],
        [latencies.mean(), np.median(latencies), np.percentile(latencies, 95), latencies.max()],
        atol=1e-3,  # frames.csv rounds to microseconds
    )
    assert json.loads((out / "summary.json").read_text()) == summary


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path, bag, served):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    run = tmp_path / "run"
    for _ in range(2):  # the failed run leaves only its log, so the same command runs again (and fails alike)
        with pytest.raises(PipelineError, match=r"exited with code 1 before serving(.|\n)*broken\.onnx"):
            run_pipeline(broken, bag, run, backend="onnxruntime", startup_timeout=TIMEOUT)
        assert [p.name for p in run.iterdir()] == ["node.log"]
    # --overwrite removes an earlier run only once the node has served: one that cannot start keeps it
    shutil.copytree(served[0], run, dirs_exist_ok=True)
    before = _recorded_files(run)
    with pytest.raises(PipelineError, match="exited with code 1 before serving"):
        run_pipeline(broken, bag, run, backend="onnxruntime", startup_timeout=TIMEOUT, overwrite=True)
    assert _recorded_files(run) == before and sorted(run.glob(".*")) == []
    for name, value in (("rate", 0.0), ("timeout", -5.0), ("startup_timeout", math.nan)):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number > 0, got {value}"):
            run_pipeline(broken, bag, run, overwrite=True, **{name: value})
    assert _recorded_files(run) == before


def test_a_pipeline_killed_while_its_node_starts_loses_nothing(tmp_path, model, bag, served, caplog):
    """SIGKILL after --overwrite set the earlier run aside, before the node served: the node follows the
    pipeline (parent-death signal), even when the pipeline was started with SIGINT ignored, as a background
    job of a script is, and the next run on the folder puts the earlier run back."""
    run = tmp_path / "run"
    shutil.copytree(served[0], run)
    before = _recorded_files(run)
    unique_model = tmp_path / "killed_pipeline_model.onnx"
    shutil.copyfile(model, unique_model)
    node_argument = f"model_path:={unique_model.resolve()}"  # finds the node among the processes
    package = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "ssim_depth.tools.pipeline", "--model", str(unique_model), "--bag",
               str(bag), "--out", str(run), "--overwrite", "--backend", "onnxruntime"]  # fmt: skip
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    with subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, preexec_fn=ignore_sigint) as process:
        deadline = time.monotonic() + TIMEOUT
        while not (_processes_with(node_argument) and list(run.glob(".earlier-run-*"))):
            assert time.monotonic() < deadline and process.poll() is None, "the node did not start"
            time.sleep(0.01)
        process.kill()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + TIMEOUT
    while _processes_with(node_argument) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_with(node_argument), "the node outlived the pipeline"
    assert list(run.glob(".earlier-run-*")) and _recorded_files(run) != before  # what the kill left

    with pytest.raises(ValueError, match="holds an earlier recording"):
        run_pipeline(model, bag, run, backend="onnxruntime")
    assert "put back an earlier recording's depth, depth_raw, frames.csv" in caplog.text
    assert _recorded_files(run) == before and list(run.glob(".earlier-run-*")) == []


def _processes_with(argument: str) -> list[int]:
    """The pids of the processes with ``argument`` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _recorded_files(out: Path) -> dict[Path, bytes]:
    """Every file of a pipeline run in ``out`` but its node log, by relative path: its content."""
    return {
        p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "node.log"
    }


def test_frames_withheld_for_want_of_a_ground_plane_are_counted(tmp_path, random_onnx, bag, caplog):
    """Under scale source camera_height the node publishes no depth until the ground plane fits, which on a
    random network's nearly constant depth it never does: the warm-up still ends (on the node's depth/model
    tag), the run ends on the last frame's tag (which announces no depth) instead of waiting out the timeout,
    and every frame the node served is counted as withheld, none recorded."""
    params = {"scale_source": "camera_height", "camera_height": 1.65}
    summary = run_pipeline(
        random_onnx, bag, tmp_path / "run", backend="onnxruntime", node_params=params,
        startup_timeout=TIMEOUT, timeout=TIMEOUT,
    )  # fmt: skip
    assert "did not arrive" not in caplog.text
    assert summary["frames_published"] == FRAMES and summary["frames_received"] == 0
    assert summary["withheld"] == summary["frames_processed"] >= 1
    assert summary["dropped"] == FRAMES - summary["frames_processed"]
    assert not any((tmp_path / "run" / "depth").iterdir())


def test_bad_inputs_are_named(tmp_path, model, bag):
    with pytest.raises(FileNotFoundError, match="^model not found: .*missing.onnx$"):
        run_pipeline(tmp_path / "missing.onnx", bag, tmp_path / "run")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        ValueError, match=r"a_file/run: .*a_file is not a folder: choose a folder for the outputs"
    ):
        run_pipeline(model, bag, tmp_path / "a_file" / "run")
    with pytest.raises(SystemExit) as exit_:  # bad input exits with 2, as ssim-depth and play do
        pipeline_main(
            ["--model", str(tmp_path / "missing.onnx"), "--bag", str(bag), "--out", str(tmp_path / "o")]
        )
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="not a rosbag2"):
        run_pipeline(model, tmp_path, tmp_path / "run")


def test_an_earlier_run_is_refused_unless_overwritten(tmp_path, model, bag, served):
    out, _ = served
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"holds an earlier recording \(depth, depth_raw, points.ply"):
        run_pipeline(model, bag, out, backend="onnxruntime")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing touched

    earlier = tmp_path / "earlier"
    (earlier / "depth").mkdir(parents=True)
    (earlier / "depth" / "000009.png").write_bytes(b"a frame the new run would not overwrite")
    (earlier / "frames.csv").write_text("index,stamp_ns,latency_ms\n")
    (earlier / "notes.txt").write_text("the user's own file")
    claim_output(earlier, overwrite=True)
    assert sorted(p.name for p in earlier.iterdir()) == ["notes.txt"]


def test_ctrl_c_ends_the_pipeline_with_one_line_and_stops_the_node(tmp_path, model, bag):
    package = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "ssim_depth.tools.pipeline", "--model", str(model), "--bag", str(bag),
               "--out", str(tmp_path / "run"), "--rate", "0.2", "--backend", "onnxruntime"]  # fmt: skip
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + TIMEOUT
        while not any((tmp_path / "run" / "depth").glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.05)  # playback has begun: the node serves
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "pipeline: interrupted" and "Traceback" not in stderr
    assert "exited with code" not in stderr  # the node was stopped, not found dead
