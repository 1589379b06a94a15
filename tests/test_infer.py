"""``ssim-depth infer`` (apps.infer) on image folders, videos and rosbag2, its output folder (an earlier run
refused unless --overwrite), the depth colouriser, the data flags of the other verbs (synth --stereo, train
--odometry-topic) and export's --precision without --tensorrt."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from depth_oracle import synthetic_street, write_oracle_onnx
from onnx import TensorProto, helper, numpy_helper
from skimage import data

from ssim_depth_core.apps.cli import main
from ssim_depth_core.apps.infer import run_inference
from ssim_depth_core.artifact import INPUT_NAME, OUTPUT_NAME, ExportMetadata
from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.bagio import KITTI_IMAGE_TOPIC, CameraBagWriter
from ssim_depth_core.imaging import colorize_depth
from ssim_depth_core.runtime import DepthEstimator
from ssim_depth_core.runtime.frames import ScaleSettings
from ssim_depth_core.runtime.scale import GroundPlaneSettings

HEIGHT, WIDTH = 80, 120  # frames: not the network's 64x96, same 2:3 aspect ratio
MAGMA = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_MAGMA)[:, 0]  # level -> BGR


@pytest.fixture(scope="module")
def metric_checkpoint(velocity_checkpoint):
    """The shared random network as a metric (velocity-supervised) model: the default scale source "model"
    serves it as it is."""
    return velocity_checkpoint


@pytest.fixture(scope="module")
def estimator(metric_checkpoint):
    """The reference: the runtime's estimator called directly on the same frames."""
    return DepthEstimator(metric_checkpoint, backend="torch", device="cpu")


def _frames(count: int) -> list[np.ndarray]:
    """``count`` different crops of a real photograph, HEIGHT x WIDTH RGB uint8."""
    photo = data.astronaut()
    return [
        np.ascontiguousarray(cv2.resize(photo[40 * i : 40 * i + 320, 16:496], (WIDTH, HEIGHT)))
        for i in range(count)
    ]


def _write_images(folder, frames) -> list:
    folder.mkdir()
    paths = [folder / f"frame_{i:03d}.png" for i in range(len(frames))]
    for path, frame in zip(paths, frames, strict=True):
        assert cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return paths


def _raw_depth(path) -> np.ndarray:
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert png is not None and png.dtype == np.uint16, path
    return png.astype(np.float64) / 256.0


# ------------------------------------------------------------------------------------------ colorize_depth
def test_colorize_depth_maps_inverse_depth_near_bright_and_invalid_black():
    # inverse depths 1, 1/2, 1/8 -> normalised 1, (1/2 - 1/8) / (1 - 1/8) = 3/7, 0 -> levels 255, 109, 0
    depth = np.array([[1.0, 2.0, 8.0], [np.nan, 0.0, -1.0], [np.inf, 2.0, 1.0]], np.float32)
    bgr = colorize_depth(depth)
    assert bgr.shape == (3, 3, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[0], MAGMA[[255, 109, 0]])
    np.testing.assert_array_equal(bgr[2, 1:], MAGMA[[109, 255]])
    np.testing.assert_array_equal(bgr[1], 0)
    np.testing.assert_array_equal(bgr[2, 0], 0)
    luma = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(int)
    assert luma[0, 0] > luma[0, 1] > luma[0, 2]  # nearer is brighter
    assert not colorize_depth(np.full((2, 5), np.nan, np.float32)).any()


def test_colorize_depth_fixed_range_clips():
    # vmin=1, vmax=8: inverse depth normalised over [1/8, 1]; 0.5 m and 16 m lie outside and are clipped.
    depth = np.array([[0.5, 1.0, 2.0, 8.0, 16.0]], np.float32)
    bgr = colorize_depth(depth, vmin=1.0, vmax=8.0)
    np.testing.assert_array_equal(bgr[0], MAGMA[[255, 255, 109, 0, 0]])
    jet = colorize_depth(depth, cv2.COLORMAP_JET, vmin=1.0, vmax=8.0)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    np.testing.assert_array_equal(jet[0], lut[[255, 255, 109, 0, 0]])


@pytest.mark.parametrize(
    ("depth", "kwargs", "message"),
    [
        (np.ones((2, 2, 1), np.float32), {}, r"\(H, W\) array, got shape \(2, 2, 1\)"),
        (np.ones((2, 2), np.float32), {"vmin": 4.0, "vmax": 2.0}, "vmin < vmax"),
        (np.ones((2, 2), np.float32), {"vmin": 0.0}, "vmin must be a finite depth > 0"),
        (np.ones((2, 2), np.float32), {"vmax": np.inf}, "vmax must be a finite depth > 0"),
    ],
)
def test_colorize_depth_rejects_bad_arguments(depth, kwargs, message):
    with pytest.raises(ValueError, match=message):
        colorize_depth(depth, **kwargs)


# ------------------------------------------------------------------------------------------ run_inference
def test_image_folder_writes_colour_and_raw_depth_of_each_frame(metric_checkpoint, estimator, tmp_path):
    frames = _frames(3)
    paths = _write_images(tmp_path / "images", frames)
    summary = run_inference(metric_checkpoint, tmp_path / "images", tmp_path / "out", progress=False)

    for path, frame in zip(paths, frames, strict=True):
        expected = estimator(frame)
        colour = cv2.imread(str(tmp_path / "out" / "depth" / path.name))  # images/x.png -> depth/x.png
        assert colour.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(colour, colorize_depth(expected))
        raw = _raw_depth(tmp_path / "out" / "depth_raw" / path.name)
        assert raw.shape == (HEIGHT, WIDTH)
        np.testing.assert_allclose(raw, expected, rtol=0, atol=0.5 / 256 + 1e-6)  # rounding to 1/256 m
    assert not (tmp_path / "out" / "clouds").exists()

    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == summary
    assert {k: summary[k] for k in ("frames", "skipped", "skipped_frames", "input_kind", "backend")} == {
        "frames": 3,
        "skipped": 0,
        "skipped_frames": [],
        "input_kind": "images",
        "backend": "torch",
    }
    assert summary["network_size"] == [64, 96] and summary["intrinsics"] is None
    latency = summary["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "mean"}
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert set(summary["outputs"]) == {"depth", "depth_raw"}


def test_unreadable_images_are_skipped_and_counted(metric_checkpoint, tmp_path, caplog):
    paths = _write_images(tmp_path / "images", _frames(3))
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature and nothing decodable
    with caplog.at_level(logging.WARNING):
        summary = run_inference(metric_checkpoint, tmp_path / "images", tmp_path / "out", progress=False)
    assert (summary["frames"], summary["skipped"], summary["skipped_frames"]) == (2, 1, [str(paths[1])])
    assert str(paths[1]) in caplog.text
    # files keep the input names: the missing one shows which frame was lost
    assert sorted(p.name for p in (tmp_path / "out" / "depth").iterdir()) == [paths[0].name, paths[2].name]
    assert [entry["file"] for entry in summary["frame_sources"]] == [str(paths[0]), str(paths[2])]

    for path in paths:
        path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="none of its 3 frames could be read"):
        run_inference(metric_checkpoint, tmp_path / "images", tmp_path / "empty", progress=False)
    assert json.loads((tmp_path / "empty" / "summary.json").read_text())["skipped"] == 3


def test_video_through_the_cli(metric_checkpoint, tmp_path, capsys):
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in _frames(5):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

    out = tmp_path / "out"
    args = ["infer", "--model", str(metric_checkpoint), "--input", str(video), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert "5 frames (0 skipped) on torch" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["input_kind"]) == (5, "video")
    names = sorted(p.name for p in (out / "depth_raw").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    assert cv2.imread(str(out / "depth" / names[-1])).shape == (HEIGHT, WIDTH, 3)


def test_rosbag_point_clouds_match_open3d(metric_checkpoint, estimator, tmp_path):
    o3d = pytest.importorskip("open3d")
    camera = Intrinsics(fx=70.0, fy=66.0, cx=57.3, cy=41.8, width=WIDTH, height=HEIGHT)
    frames = _frames(2)
    with CameraBagWriter(tmp_path / "bag", camera, storage="mcap") as bag:
        for i, frame in enumerate(frames):
            bag.write(frame, 1_000_000_000 + i * 100_000_000)

    stride = 3  # 80 and 120 rows/cols -> 27 x 40 kept pixels
    summary = run_inference(
        metric_checkpoint, tmp_path / "bag", tmp_path / "out", pointcloud="ply", stride=stride, progress=False
    )
    assert (summary["frames"], summary["input_kind"]) == (2, "rosbag")
    assert summary["intrinsics"] == {"source": "camera_info", "fx": 70.0, "fy": 66.0, "cx": 57.3, "cy": 41.8,
                                     "width": WIDTH, "height": HEIGHT}  # fmt: skip

    for i, frame in enumerate(frames):
        depth = estimator(frame)
        assert np.isfinite(depth).all() and (depth > 0).all()  # every pixel is valid
        cloud = o3d.io.read_point_cloud(str(tmp_path / "out" / "clouds" / f"{i:06d}.ply"))
        points, colours = np.asarray(cloud.points), np.asarray(cloud.colors)
        assert len(points) == len(range(0, HEIGHT, stride)) * len(range(0, WIDTH, stride)) == 27 * 40
        reference = o3d.geometry.PointCloud.create_from_depth_image(
            o3d.geometry.Image(depth),
            o3d.camera.PinholeCameraIntrinsic(WIDTH, HEIGHT, camera.fx, camera.fy, camera.cx, camera.cy),
            depth_scale=1.0,
            depth_trunc=1e6,
            stride=stride,
        )
        np.testing.assert_allclose(points, np.asarray(reference.points), rtol=1e-5, atol=1e-6)
        expected_colours = frame[::stride, ::stride].reshape(-1, 3)
        np.testing.assert_array_equal(np.round(colours * 255).astype(np.uint8), expected_colours)


def test_given_and_guessed_intrinsics_of_a_single_image(metric_checkpoint, estimator, tmp_path, caplog):
    (path,) = _write_images(tmp_path / "images", _frames(1))
    depth = estimator(_frames(1)[0])
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]

    def cloud_xyz(out):
        cloud = open(out / "clouds" / f"{path.stem}.ply", "rb").read()
        header, body = cloud.split(b"end_header\n")
        assert b"element vertex 9600" in header and b"property uchar red" in header
        vertices = np.frombuffer(body, np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]))
        return vertices["xyz"]

    fx, fy, cx, cy = 100.0, 90.0, 61.0, 38.5
    summary = run_inference(
        metric_checkpoint,
        path,
        tmp_path / "given",
        pointcloud="ply",
        intrinsics=(fx, fy, cx, cy),
        progress=False,
    )
    assert summary["intrinsics"]["source"] == "given" and summary["input_kind"] == "images"
    expected = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(cloud_xyz(tmp_path / "given"), expected, rtol=1e-5, atol=1e-6)

    with caplog.at_level(logging.WARNING):
        summary = run_inference(
            metric_checkpoint, path, tmp_path / "guessed", pointcloud="ply", progress=False
        )
    assert "guessed camera" in caplog.text
    focal = 0.58 * WIDTH
    assert summary["intrinsics"] == {"source": "guessed", "fx": focal, "fy": focal, "cx": 59.5, "cy": 39.5,
                                     "width": WIDTH, "height": HEIGHT}  # fmt: skip
    expected = np.stack([(u - 59.5) / focal * depth, (v - 39.5) / focal * depth, depth], -1).reshape(-1, 3)
    np.testing.assert_allclose(cloud_xyz(tmp_path / "guessed"), expected, rtol=1e-5, atol=1e-6)


def test_output_names_map_back_to_the_inputs(metric_checkpoint, estimator, tmp_path):
    """Every output file's name leads, through summary.json's frame_sources, to the frame it was made from."""
    frames = _frames(3)
    folder = tmp_path / "kitti" / "image_02" / "data"
    folder.parent.mkdir(parents=True)
    folder.mkdir()
    numbers = [12, 3, 40]  # KITTI-style names, not in list order
    for number, frame in zip(numbers, frames, strict=True):
        assert cv2.imwrite(str(folder / f"{number:010d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    summary = run_inference(metric_checkpoint, folder, out, pointcloud="ply", progress=False)
    names = [f"{number:010d}" for number in sorted(numbers)]
    assert summary["frame_sources"] == [
        {"name": name, "scale": 1.0, "file": str(folder / f"{name}.png")} for name in names
    ]
    assert sorted(p.name for p in (out / "depth_raw").iterdir()) == [f"{name}.png" for name in names]
    assert sorted(p.name for p in (out / "clouds").iterdir()) == [f"{name}.ply" for name in names]
    for entry in summary["frame_sources"]:
        frame = frames[numbers.index(int(entry["name"]))]  # the frame written as this input file
        np.testing.assert_allclose(
            _raw_depth(out / "depth_raw" / f"{entry['name']}.png"), estimator(frame), atol=0.5 / 256 + 1e-6
        )

    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    summary = run_inference(metric_checkpoint, video, tmp_path / "video", progress=False)
    assert summary["frame_sources"] == [{"name": f"{i:06d}", "scale": 1.0, "frame": i} for i in range(3)]

    stamps = [1_000_000_000 + i * 100_000_000 for i in (2, 0, 1)]  # written out of stamp order
    with CameraBagWriter(tmp_path / "bag", Intrinsics(70.0, 70.0, 59.5, 39.5, WIDTH, HEIGHT)) as bag:
        for stamp, frame in zip(stamps, frames, strict=True):
            bag.write(frame, stamp)
    summary = run_inference(metric_checkpoint, tmp_path / "bag", tmp_path / "bag_out", progress=False)
    assert summary["frame_sources"] == [
        {
            "name": f"{i:06d}",
            "scale": 1.0,
            "topic": KITTI_IMAGE_TOPIC,
            "stamp_s": pytest.approx(1.0 + i * 0.1, abs=1e-9),
        }
        for i in range(3)
    ]
    for entry in summary["frame_sources"]:  # header-stamp order: 000000 is the frame stamped 1.0 s
        frame = frames[stamps.index(round(entry["stamp_s"] * 1e9))]
        np.testing.assert_allclose(
            _raw_depth(tmp_path / "bag_out" / "depth_raw" / f"{entry['name']}.png"),
            estimator(frame),
            atol=0.5 / 256 + 1e-6,
        )


def test_images_that_would_share_output_names_are_refused(metric_checkpoint, tmp_path):
    (path,) = _write_images(tmp_path / "images", _frames(1))
    path.with_suffix(".jpg").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"frame_000\.jpg and frame_000\.png would both write depth/"):
        run_inference(metric_checkpoint, tmp_path / "images", tmp_path / "out", progress=False)


def test_bad_arguments_are_named(metric_checkpoint, tmp_path):
    images = tmp_path / "images"
    _write_images(images, _frames(1))
    out = tmp_path / "out"
    cases = [
        ({"input_path": tmp_path / "missing"}, FileNotFoundError, "input not found"),
        ({"pointcloud": "pcd"}, ValueError, "point-cloud format 'pcd'"),
        ({"stride": 0}, ValueError, "stride must be a positive integer, got 0"),
        ({"intrinsics": (1.0, 2.0)}, ValueError, r"\(fx, fy, cx, cy\)"),
        ({"intrinsics": (-1.0, 2.0, 3.0, 4.0)}, ValueError, "focal lengths must be positive"),
        ({"image_topic": "/camera/image"}, ValueError, "rosbag2 inputs only"),
        ({"input_path": tmp_path}, ValueError, "neither images"),
    ]
    for kwargs, error, message in cases:
        arguments = {"model": metric_checkpoint, "input_path": images, "out_dir": out, "progress": False}
        with pytest.raises(error, match=message):
            run_inference(**{**arguments, **kwargs})
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unknown input type '\.txt'"):
        run_inference(metric_checkpoint, tmp_path / "notes.txt", out, progress=False)
    with CameraBagWriter(tmp_path / "bag", Intrinsics(70.0, 70.0, 59.5, 39.5, WIDTH, HEIGHT)) as bag:
        bag.write(_frames(1)[0], 1)
    with pytest.raises(ValueError, match="CameraInfo topic"):
        run_inference(
            metric_checkpoint, tmp_path / "bag", out, intrinsics=(1.0, 1.0, 1.0, 1.0), progress=False
        )


# ------------------------------------------------------------------------------------------ output folder
def _tree(folder) -> dict:
    """Every file under ``folder`` with its bytes, every folder with None."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--depth-scale", "3"], "--depth-scale applies to --scale-source fixed, not model"),
        (
            ["--scale-source", "fixed", "--camera-height", "1.6"],
            "--camera-height applies to --scale-source camera_height, not fixed",
        ),
    ],
)
def test_a_scale_flag_its_scale_source_ignores_is_refused(
    metric_checkpoint, tmp_path, caplog, extra, message
):
    _write_images(tmp_path / "images", _frames(1))
    argv = [
        "infer",
        "--model",
        str(metric_checkpoint),
        "--input",
        str(tmp_path / "images"),
        "--out",
        str(tmp_path / "out"),
    ]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, *extra]) == 2
    assert message in caplog.text and not (tmp_path / "out").exists()


def test_an_earlier_run_is_refused_unless_overwritten(
    metric_checkpoint, random_checkpoint, estimator, tmp_path, caplog
):
    frames = _frames(2)
    a, b = _write_images(tmp_path / "images", frames)
    out = tmp_path / "out"
    run_inference(metric_checkpoint, tmp_path / "images", out, pointcloud="ply", progress=False)
    assert sorted(p.name for p in (out / "clouds").iterdir()) == ["frame_000.ply", "frame_001.ply"]
    (out / "notes.txt").write_text("the user's own file")
    before = _tree(out)
    b.write_bytes(b"not an image")  # the next run skips b: run 1's depth/b.png must not stay behind

    refusal = (
        f"{out} holds an earlier run of ssim-depth infer (depth, depth_raw, clouds, summary.json): pass "
        "--overwrite to replace it, or choose another folder"
    )
    with pytest.raises(ValueError) as error:
        run_inference(metric_checkpoint, tmp_path / "images", out, progress=False)
    assert str(error.value) == refusal
    argv = ["infer", "--model", str(metric_checkpoint), "--input", str(a.parent), "--out", str(out)]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--no-progress"]) == 2
    assert refusal in caplog.text
    # --overwrite with a model that is then refused: the earlier run is removed only once the model has opened
    with pytest.raises(ValueError, match="scale_source 'model' needs a metric model"):
        run_inference(random_checkpoint, tmp_path / "images", out, overwrite=True, progress=False)
    assert _tree(out) == before
    # --overwrite never removes what the run reads: the earlier run's depth as input, a model kept in it
    with pytest.raises(ValueError, match=f"^--input {out / 'depth'} is in {out / 'depth'}, an output of"):
        run_inference(metric_checkpoint, out / "depth", out, overwrite=True, progress=False)
    shutil.copyfile(metric_checkpoint, out / "clouds" / "model.pt")
    with pytest.raises(ValueError, match=f"^--model {out / 'clouds' / 'model.pt'} is in {out / 'clouds'}"):
        run_inference(out / "clouds" / "model.pt", tmp_path / "images", out, overwrite=True, progress=False)
    (out / "clouds" / "model.pt").unlink()
    assert _tree(out) == before

    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--no-progress", "--overwrite"]) == 0
    assert "removed the earlier run's depth, depth_raw, clouds, summary.json" in caplog.text
    # exactly the new run's outputs, beside the user's file; nothing of the earlier run
    assert sorted(p.name for p in out.iterdir()) == ["depth", "depth_raw", "notes.txt", "summary.json"]
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert [p.name for p in (out / "depth").iterdir()] == [a.name]
    assert [p.name for p in (out / "depth_raw").iterdir()] == [a.name]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["skipped_frames"]) == (1, [str(b)])
    colour = cv2.imread(str(out / "depth" / a.name))
    np.testing.assert_array_equal(colour, colorize_depth(estimator(frames[0])))


def _crafted_onnx(
    path: Path, input_shape: list[int], input_type=TensorProto.FLOAT, nan: bool = False
) -> Path:
    """A metric model file whose graph is the square root of its input's channel mean (the log of a negative
    number with ``nan``), with the metadata of a 64x96 export whatever ``input_shape`` says."""
    source, nodes = INPUT_NAME, []
    if input_type != TensorProto.FLOAT:
        source, nodes = "cast", [helper.make_node("Cast", [INPUT_NAME], ["cast"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("ReduceMean", [source, "axis"], ["mean"], keepdims=1))
    if nan:  # mean - 1.5 lies in [-1.5, -0.5]: its log is NaN
        nodes += [
            helper.make_node("Sub", ["mean", "one"], ["minus"]),
            helper.make_node("Log", ["minus"], [OUTPUT_NAME]),
        ]
    else:
        nodes.append(helper.make_node("Sqrt", ["mean"], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        "crafted",
        [helper.make_tensor_value_info(INPUT_NAME, input_type, input_shape)],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, [input_shape[0], 1, *input_shape[2:]]
            )
        ],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.float32(1.5), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(
        model, ExportMetadata(0.5, 80.0, 64, 96, 64, 96, "crafted: {}\n", "velocity").to_props()
    )
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("shape", "input_type"),
    [
        ([1, 3, 32, 48], TensorProto.FLOAT),
        ([1, 3, 64, 96], TensorProto.UINT8),
        ([1, 1, 64, 96], TensorProto.FLOAT),
    ],
)
def test_a_graph_that_does_not_match_its_metadata_is_refused_when_opened(tmp_path, shape, input_type):
    model = _crafted_onnx(tmp_path / "m.onnx", shape, input_type)
    with pytest.raises(ValueError, match=r"m\.onnx: 'image' is tensor\(\w+\) \[.*takes and gives float32"):
        DepthEstimator(model)


def test_a_model_that_cannot_run_is_refused_before_an_earlier_run_is_touched(
    metric_checkpoint, tmp_path, caplog
):
    """A model that opens but gives NaN depth: one error line, exit 2; the earlier run (--overwrite) stays."""
    _write_images(tmp_path / "images", _frames(1))
    out = tmp_path / "out"
    run_inference(metric_checkpoint, tmp_path / "images", out, progress=False)
    before = _tree(out)
    nan_model = _crafted_onnx(tmp_path / "nan.onnx", [1, 3, 64, 96], nan=True)
    argv = ["infer", "--model", str(nan_model), "--input", str(tmp_path / "images"), "--out", str(out)]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--overwrite", "--no-progress"]) == 2
    assert "nan.onnx: the model gives non-finite depth" in caplog.text
    assert _tree(out) == before


def test_an_output_path_that_is_a_file_is_refused(metric_checkpoint, tmp_path):
    _write_images(tmp_path / "images", _frames(1))
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(ValueError, match=f"^{out} is not a folder"):
        run_inference(metric_checkpoint, tmp_path / "images", out, overwrite=True, progress=False)
    assert out.read_text() == "a file"


# ------------------------------------------------------------------------------------------------- scale
def test_scale_less_model_is_refused_by_default_and_fixed_multiplies(random_checkpoint, estimator, tmp_path):
    frames = _frames(2)
    paths = _write_images(tmp_path / "images", frames)
    with pytest.raises(ValueError, match="scale_source 'model' needs a metric model") as error:
        run_inference(random_checkpoint, tmp_path / "images", tmp_path / "refused", progress=False)
    assert str(random_checkpoint) in str(error.value) and "'camera_height'" in str(error.value)
    assert not (tmp_path / "refused").exists()  # the model is opened before any folder is created

    fixed = ScaleSettings("fixed", 2.0)
    out = tmp_path / "out"
    summary = run_inference(random_checkpoint, tmp_path / "images", out, scale=fixed, progress=False)
    for path, frame in zip(paths, frames, strict=True):  # the same weights as the metric fixture model
        np.testing.assert_allclose(
            _raw_depth(out / "depth_raw" / path.name), 2.0 * estimator(frame), atol=2e-3
        )
    assert summary["scale"] == {"source": "fixed", "min": 2.0, "median": 2.0, "max": 2.0}
    assert (summary["withheld"], summary["withheld_frames"]) == (0, [])
    assert [entry["scale"] for entry in summary["frame_sources"]] == [2.0, 2.0]


def test_camera_height_makes_a_street_metric_and_withholds_frames_without_a_plane(tmp_path):
    """A scale-less model predicting a rendered street's exact depth / 3, with the camera's true height."""
    street = synthetic_street()
    model = write_oracle_onnx(tmp_path / "street.onnx", street.depth / 3.0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        assert cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(street.rgb, cv2.COLOR_RGB2BGR))
    k = street.intrinsics
    arguments = {"backend": "onnxruntime", "intrinsics": (k.fx, k.fy, k.cx, k.cy), "progress": False}

    ground = GroundPlaneSettings(street.camera_height)
    scale = ScaleSettings("camera_height", ground=ground)
    summary = run_inference(model, folder, tmp_path / "out", scale=scale, **arguments)
    assert summary["intrinsics"]["source"] == "given"  # the ground fit needs a camera even without clouds
    assert summary["scale"]["source"] == "camera_height" and summary["withheld"] == 0
    assert summary["scale"]["median"] == pytest.approx(3.0, rel=0.05)
    valid = street.depth > 0
    for name in ("a", "b"):
        raw = _raw_depth(tmp_path / "out" / "depth_raw" / f"{name}.png")
        np.testing.assert_allclose(raw[valid], street.depth[valid], rtol=0.05, atol=2e-3)
    # The same through the command line.
    cli = ["infer", "--model", str(model), "--input", str(folder), "--out", str(tmp_path / "cli")]
    cli += ["--backend", "onnxruntime", "--intrinsics", *(str(v) for v in (k.fx, k.fy, k.cx, k.cy))]
    cli += ["--scale-source", "camera_height", "--camera-height", str(street.camera_height), "--no-progress"]
    assert main(cli) == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["scale"] == summary["scale"]
    # with the mounting's normal: the flat street's scale as well, and the option reaches the fit
    mounting = ScaleSettings(
        "camera_height", ground=GroundPlaneSettings(street.camera_height, ground_normal="mounting")
    )
    expected = run_inference(model, folder, tmp_path / "mounting", scale=mounting, **arguments)["scale"]
    assert expected["median"] == pytest.approx(3.0, rel=0.05)
    cli[cli.index(str(tmp_path / "cli"))] = str(tmp_path / "cli_mounting")
    assert main([*cli, "--ground-normal", "mounting"]) == 0
    assert json.loads((tmp_path / "cli_mounting" / "summary.json").read_text())["scale"] == expected
    assert main([*cli, "--ground-normal", "up"]) == 2

    # configured as looking 20 degrees up: no ground below its horizon, no scale, nothing written
    looking_up = ScaleSettings("camera_height", ground=GroundPlaneSettings(street.camera_height, -0.35))
    summary = run_inference(model, folder, tmp_path / "up", scale=looking_up, **arguments)
    assert summary["withheld"] == 2 and summary["frame_sources"] == []
    assert [entry["name"] for entry in summary["withheld_frames"]] == ["a", "b"]
    assert all("below the horizon" in entry["reason"] for entry in summary["withheld_frames"])
    assert summary["scale"] == {"source": "camera_height", "min": None, "median": None, "max": None}
    assert not any((tmp_path / "up" / "depth_raw").iterdir())


# ------------------------------------------------------------------- flags of the other verbs that feed data
def test_synth_stereo_and_train_odometry_topic_flags(tmp_path, caplog):
    """``synth --stereo`` renders the right camera; ``train --odometry-topic`` reaches the bag reader."""
    out = tmp_path / "synth"
    argv = ["synth", "--out", str(out), "--drives", "1", "--frames", "3", "--size", "96x64", "--stereo"]
    assert main(argv) == 0
    for camera in ("image_02", "image_03"):
        assert len(list(out.glob(f"*/*_sync/{camera}/data/*.png"))) == 3, camera
    (bag,) = (out / "bags").iterdir()

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic_cpu.yaml"
    train = ["train", "--config", str(config), "--data", str(bag), "--out", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR, logger="ssim_depth"):
        assert main([*train, "--odometry-topic", "/not_odometry"]) == 2
    assert "odometry topic '/not_odometry' not found" in caplog.text


# ------------------------------------------------------------------------------------------ export's flags
@pytest.mark.parametrize(
    ("extra", "precision"),
    [([], "fp16"), ([], "fp32"), (["--int8", "--calibration", "data"], "int8")],
)
def test_export_precision_without_tensorrt_is_refused(random_checkpoint, tmp_path, caplog, extra, precision):
    """--precision sets the TensorRT engine's precision: without --tensorrt there is no engine to set."""
    onnx_path = tmp_path / "m.onnx"
    argv = ["export", "--checkpoint", str(random_checkpoint), "--onnx", str(onnx_path), *extra]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--precision", precision]) == 2
    assert f"--precision {precision} applies to the TensorRT engine: add --tensorrt PATH" in caplog.text
    assert not onnx_path.exists()  # refused before anything was exported
