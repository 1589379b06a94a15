"""sensor_msgs codecs of the ROS package (real rclpy message classes, no ROS graph needed)."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from skimage import data
from ssim_depth.codecs import (
    ImageDecodeError,
    camera_info_from_intrinsics,
    cloud_to_pointcloud2_msg,
    depth_to_image_msg,
    image_msg_to_depth,
    image_msg_to_rgb,
    intrinsics_from_camera_info,
    model_info_msg,
    parse_model_info,
    pointcloud2_msg_to_cloud,
    preview_image_msg,
    scaled_camera_info,
)
from std_msgs.msg import Header, String

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.imaging import colorize_depth
from ssim_depth_core.runtime.frames import FrameOptions, ModelSettings, ScaleSettings
from ssim_depth_core.runtime.pointcloud import depth_to_pointcloud, unpack_rgb

PAD = 5  # bytes of row padding in the padded variants


@pytest.fixture(scope="module")
def rgb():
    """A real photograph, 60x90 RGB uint8 (odd width, so rows of 3-byte pixels are not 4-aligned)."""
    return np.ascontiguousarray(data.astronaut()[100:400:5, 100:550:5])


def _raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """Image message of (H, W[, C]) uint8 ``pixels`` with ``pad`` garbage bytes after every row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=padded.shape[1], data=padded.tobytes())


# Each encoding built from the RGB photograph by OpenCV, and the RGB the decoder must return for it.
ENCODERS = {
    "rgb8": (lambda rgb: rgb, lambda rgb: rgb),
    "bgr8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), lambda rgb: rgb),
    "rgba8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), lambda rgb: rgb),
    "bgra8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), lambda rgb: rgb),
    "mono8": (
        lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        lambda rgb: cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
    ),
}


@pytest.mark.parametrize("pad", [0, PAD], ids=["packed", "padded"])
@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_decodes_every_encoding(rgb, encoding, pad):
    encode, expected = ENCODERS[encoding]
    decoded = image_msg_to_rgb(_raw_msg(encode(rgb), encoding, pad))
    assert decoded.dtype == np.uint8 and decoded.shape == rgb.shape
    np.testing.assert_array_equal(decoded, expected(rgb))


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_matches_cv_bridge(rgb, encoding):
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not installed")
    msg = _raw_msg(ENCODERS[encoding][0](rgb), encoding, PAD)
    reference = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), reference)


def test_decodes_compressed_png(rgb):
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="png", data=png.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    "msg, message",
    [
        (Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(18 * 4 - 1)), r"data has 71 bytes"),
        (
            Image(height=4, width=6, encoding="yuv422", step=12, data=bytes(48)),
            "unsupported encoding 'yuv422'",
        ),
        (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), r"empty image"),
        (Image(height=4, width=6, encoding="rgb8", step=12, data=bytes(48)), r"step 12 is shorter"),
        (CompressedImage(format="jpeg", data=b""), r"empty image data"),
        (CompressedImage(format="jpeg", data=b"\x00" * 64), r"cannot decode"),
    ],
    ids=["length", "encoding", "empty", "step", "compressed-empty", "compressed-garbage"],
)
def test_malformed_messages_raise_a_specific_error(msg, message):
    with pytest.raises(ImageDecodeError, match=message):
        image_msg_to_rgb(msg)


def test_pixel_limit_names_the_size_and_the_limit(rgb):
    height, width = rgb.shape[:2]
    raw = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(raw, max_pixels=width * height), rgb)
    with pytest.raises(ImageDecodeError, match=rf"Image {width}x{height} rgb8: size: .* limit of 10$"):
        image_msg_to_rgb(raw, max_pixels=10)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    compressed = CompressedImage(format="png", data=png.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(compressed, max_pixels=width * height), rgb)
    with pytest.raises(
        ImageDecodeError, match=rf"^CompressedImage \(png\) \(size from its header\): {width}x{height} = "
    ):
        image_msg_to_rgb(compressed, max_pixels=10)


@pytest.fixture()
def depth():
    values = np.linspace(0.5, 80.0, 7 * 9, dtype=np.float32).reshape(7, 9)
    values[2, 3] = values[6, 0] = np.nan
    return values


def test_depth_round_trip_keeps_nan(depth):
    header = Header(frame_id="camera_color_left")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = depth_to_image_msg(depth, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC1", 7, 9, 36)
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert msg.header == header
    np.testing.assert_array_equal(image_msg_to_depth(msg), depth)  # NaN compares equal here


@pytest.mark.parametrize("big_endian", [False, True])
def test_depth_decoder_honours_padding_and_byte_order(depth, big_endian):
    raw = depth.astype(">f4" if big_endian else "<f4").view(np.uint8)
    msg = _raw_msg(raw, "32FC1", pad=8)
    msg.width, msg.is_bigendian = 9, big_endian
    assert msg.step == 9 * 4 + 8
    np.testing.assert_array_equal(image_msg_to_depth(msg), depth)


def test_preview_is_colormapped_inverse_depth(depth):
    msg = preview_image_msg(colorize_depth(depth), Header(frame_id="cam"))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("bgr8", 7, 9, 27)
    preview = np.frombuffer(msg.data, np.uint8).reshape(7, 9, 3)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_MAGMA)[:, 0]
    # 1/depth normalised over the valid pixels: the nearest maps to 255 (bright), the farthest to 0.
    inverse = 1.0 / depth.astype(np.float64)
    lo, hi = np.nanmin(inverse), np.nanmax(inverse)
    levels = np.nan_to_num((inverse - lo) / (hi - lo) * 255.0).astype(np.int64)
    expected = lut[levels]
    valid = np.isfinite(depth)
    np.testing.assert_array_equal(preview[valid], expected[valid])
    np.testing.assert_array_equal(preview[~valid], 0)
    assert preview[0, 0].sum() > preview[-1, -1].sum()  # near is brighter than far


def test_preview_of_all_invalid_depth_is_black():
    assert not colorize_depth(np.full((3, 4), np.nan, np.float32)).any()


def test_camera_info_scaling_and_construction():
    info = CameraInfo(width=120, height=80, distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.01])
    info.k = [100.0, 0.0, 60.0, 0.0, 110.0, 40.0, 0.0, 0.0, 1.0]
    info.p = [100.0, 0.0, 60.0, -12.0, 0.0, 110.0, 40.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    header = Header(frame_id="cam")
    scaled = scaled_camera_info(info, 96, 64, header)
    assert (scaled.width, scaled.height, scaled.header) == (96, 64, header)
    # Pixel centres at integer coordinates: a resize by s maps c to (c + 0.5) * s - 0.5.
    cx, cy = 60.5 * 0.8 - 0.5, 40.5 * 0.8 - 0.5
    np.testing.assert_allclose(scaled.k, [80.0, 0, cx, 0, 88.0, cy, 0, 0, 1])
    np.testing.assert_allclose(scaled.p, [80.0, 0, cx, -9.6, 0, 88.0, cy, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(scaled.d, info.d)

    built = camera_info_from_intrinsics(Intrinsics(80.0, 88.0, 48.0, 32.0, 96, 64), header)
    assert (built.width, built.height) == (96, 64)
    np.testing.assert_array_equal(built.k, [80.0, 0, 48.0, 0, 88.0, 32.0, 0, 0, 1])
    np.testing.assert_array_equal(built.p, [80.0, 0, 48.0, 0, 0, 88.0, 32.0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(built.r, np.eye(3).ravel())
    with pytest.raises(ValueError, match="no image size"):
        scaled_camera_info(CameraInfo(), 96, 64, header)
    with pytest.raises(ValueError, match="neither K nor P"):
        scaled_camera_info(CameraInfo(width=120, height=80), 96, 64, header)


def test_a_camera_info_with_k_or_p_only_is_published_with_both():
    """Scaled as above (fx 100 -> 80, fy 110 -> 88, c -> (c + 0.5) 0.8 - 0.5); the missing matrix is the
    given one's camera, P with no translation."""
    k = [100.0, 0.0, 60.0, 0.0, 110.0, 40.0, 0.0, 0.0, 1.0]
    p = [100.0, 0.0, 60.0, 0.0, 0.0, 110.0, 40.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    cx, cy = 60.5 * 0.8 - 0.5, 40.5 * 0.8 - 0.5
    for given in ({"k": k}, {"p": p}):
        scaled = scaled_camera_info(CameraInfo(width=120, height=80, **given), 96, 64, Header())
        np.testing.assert_allclose(scaled.k, [80.0, 0, cx, 0, 88.0, cy, 0, 0, 1])
        np.testing.assert_allclose(scaled.p, [80.0, 0, cx, 0, 0, 88.0, cy, 0, 0, 0, 1, 0])


def test_camera_info_to_intrinsics_prefers_p_and_assumes_the_image_size_when_unset():
    info = CameraInfo(width=120, height=80)
    info.k = [100.0, 0.0, 60.0, 0.0, 110.0, 40.0, 0.0, 0.0, 1.0]
    assert intrinsics_from_camera_info(info, 999, 999) == Intrinsics(100.0, 110.0, 60.0, 40.0, 120, 80)
    info.p = [90.0, 0.0, 55.0, -12.0, 0.0, 95.0, 35.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rectified: P wins
    assert intrinsics_from_camera_info(info, 999, 999) == Intrinsics(90.0, 95.0, 55.0, 35.0, 120, 80)
    info.width = info.height = 0  # a driver that leaves the size unset: the image's is assumed
    info.k = [50.0, 0.0, 30.0, 0.0, 55.0, 20.0, 0.0, 0.0, 1.0]  # checked too: it is republished
    assert intrinsics_from_camera_info(info, 60, 40) == Intrinsics(90.0, 95.0, 55.0, 35.0, 60, 40)
    with pytest.raises(ValueError, match="uncalibrated"):
        intrinsics_from_camera_info(CameraInfo(width=120, height=80), 120, 80)


def test_point_cloud_round_trip_hand_checked(depth):
    """depth -> cloud -> PointCloud2 -> cloud: a hand-computed point, the header and every byte survive."""
    camera = Intrinsics(10.0, 12.0, 4.0, 3.0, 9, 7)
    colour = np.arange(7 * 9 * 3, dtype=np.uint8).reshape(7, 9, 3)
    cloud = depth_to_pointcloud(depth, camera, colour, stride=2)
    header = Header(frame_id="camera_color_left")
    msg = cloud_to_pointcloud2_msg(cloud, header)
    assert (msg.header, msg.height, msg.width, msg.point_step, msg.row_step) == (header, 4, 5, 16, 80)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1)
    ]  # fmt: skip
    assert not msg.is_bigendian and not msg.is_dense  # depth[6, 0] is NaN and kept (organised)

    decoded = pointcloud2_msg_to_cloud(msg)
    assert decoded.tobytes() == cloud.tobytes() and decoded.is_dense == cloud.is_dense
    point = decoded.points[1, 2]  # pixel (u, v) = (4, 2): x = (4 - 4) z / 10, y = (2 - 3) z / 12
    z = depth[2, 4]
    np.testing.assert_allclose([point["x"], point["y"], point["z"]], [0.0, -z / 12.0, z], rtol=1e-6)
    np.testing.assert_array_equal(unpack_rgb(decoded.points["rgb"])[1, 2], colour[2, 4])
    assert np.isnan(decoded.points[3, 0]["z"])


def test_malformed_point_clouds_are_named():
    fields = [PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
    good = PointCloud2(height=1, width=2, fields=fields, point_step=12, row_step=24, data=bytes(24))
    assert pointcloud2_msg_to_cloud(good).points.shape == (1, 2)
    float64_z = PointField(name="z", offset=8, datatype=8, count=1)
    cases = [
        (PointCloud2(height=1, width=2, fields=fields[:2], point_step=12, row_step=24, data=bytes(24)),
         r"lack one of x, y, z"),
        (PointCloud2(height=1, width=2, fields=fields, point_step=12, row_step=24, data=bytes(23)),
         r"data length 23"),
        (PointCloud2(height=1, width=2, fields=fields, point_step=12, row_step=24, data=bytes(24),
                     is_bigendian=True), "big-endian"),
        (PointCloud2(height=1, width=2, fields=[*fields[:2], float64_z], point_step=12, row_step=24,
                     data=bytes(24)), "FLOAT32"),
    ]  # fmt: skip
    for msg, message in cases:
        with pytest.raises(ValueError, match=rf"PointCloud2 \(2x1\): .*{message}"):
            pointcloud2_msg_to_cloud(msg)


def test_preview_rejects_a_depth_map():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 BGR"):
        preview_image_msg(np.ones((3, 4), np.float32), Header())


def _corrupt_compressed(rgb: np.ndarray) -> dict[str, CompressedImage]:
    """Compressed images libjpeg/libpng complain about on stderr (found by bench/fuzz_node.py)."""
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    png = cv2.imencode(".png", rgb)[1].tobytes()
    bad_sos = bytearray(jpeg)
    sos = bad_sos.index(b"\xff\xda")  # start of scan: marker, length, components, 2 bytes each, then Ss
    bad_sos[sos + 5 + 2 * bad_sos[sos + 4]] = 5  # spectral selection start 5 in a sequential JPEG
    return {
        # decodes, but half grey: libjpeg only warns "Corrupt JPEG data: premature end of data segment"
        "truncated jpeg + EOI": CompressedImage(format="jpeg", data=jpeg[: len(jpeg) // 2] + b"\xff\xd9"),
        # decodes into garbage; libjpeg only warns "Invalid SOS parameters for sequential JPEG"
        "bad SOS jpeg": CompressedImage(format="jpeg", data=bytes(bad_sos)),
        "corrupt png": CompressedImage(format="png", data=png[:200] + bytes(100) + png[300:]),
        "truncated png": CompressedImage(format="png", data=png[: len(png) // 2]),
    }


@pytest.mark.parametrize(
    "case, words",
    [
        ("truncated jpeg + EOI", r"corrupt image data .*decoder: Corrupt JPEG data"),
        ("bad SOS jpeg", r"corrupt image data .*decoder: Invalid SOS parameters"),
        ("corrupt png", r"cannot decode image .*decoder: libpng error"),
        ("truncated png", r"cannot decode image"),
    ],
)
def test_corrupt_compressed_images_are_refused_quietly_with_the_decoders_words(rgb, case, words, capfd):
    """Nothing reaches stderr (libjpeg/libpng would print a line per frame, unthrottled); the decoder's
    line, if it wrote one, is in the error, which the node logs throttled."""
    msg = _corrupt_compressed(rgb)[case]
    capfd.readouterr()
    with pytest.raises(ImageDecodeError, match=rf"CompressedImage \((jpeg|png)\): {words}"):
        image_msg_to_rgb(msg, max_pixels=1_000_000)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_other_stderr_output_during_a_decode_is_kept(capfd):
    """What another thread writes to stderr while a frame is decoded is written out afterwards."""
    from ssim_depth import codecs

    said: list[str] = []
    capfd.readouterr()
    with codecs._native_stderr(said):
        os.write(2, b"[WARN] [1.0] [other_node]: a log line of another thread\n")
        os.write(2, b"libpng error: bad adaptive filter value\n")
        os.write(2, b"\x1b[33m[WARN] [2.0] [other_node]: a coloured one\x1b[0m\n")
    assert said == ["libpng error: bad adaptive filter value"]
    assert capfd.readouterr().err == (
        "[WARN] [1.0] [other_node]: a log line of another thread\n"
        "\x1b[33m[WARN] [2.0] [other_node]: a coloured one\x1b[0m\n"
    )


def test_valid_compressed_images_still_decode_after_corrupt_ones(rgb):
    for msg in _corrupt_compressed(rgb).values():
        with pytest.raises(ImageDecodeError):
            image_msg_to_rgb(msg, max_pixels=1_000_000)
    png = CompressedImage(
        format="png", data=cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    )
    np.testing.assert_array_equal(image_msg_to_rgb(png, max_pixels=1_000_000), rgb)


def test_model_tag_round_trip():
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 17, 5
    model = {"generation": 3, "model_path": "/m/a.onnx", "model_sha256": "ab" * 32, "backend": "onnxruntime"}
    settings = ModelSettings(
        "/m/a.onnx", "onnxruntime", output_resolution="network", scale=ScaleSettings("fixed", 2.0)
    )
    options = FrameOptions(range_max=20.0, points=True, point_stride=3)
    msg = model_info_msg(model, settings, options, header, ("depth", "points"))
    assert isinstance(msg, String) and "\n" not in msg.data
    info = parse_model_info(msg)
    assert info["outputs"] == ["depth", "points"]
    assert info["stamp"] == {"sec": 17, "nanosec": 5} and info["frame_id"] == "camera"
    assert info["model"] == model
    assert info["settings"]["output_resolution"] == "network"
    assert info["settings"]["scale"] == {"source": "fixed", "depth_scale": 2.0, "ground": None}
    assert (info["options"]["range_max"], info["options"]["point_stride"]) == (20.0, 3)
    with pytest.raises(ValueError, match="not JSON"):
        parse_model_info(String(data="model a"))
    with pytest.raises(ValueError, match="no \\['model'"):
        parse_model_info(String(data='{"stamp": 1, "frame_id": "", "settings": 1, "options": 1}'))
    with pytest.raises(ValueError, match="no \\[.outputs.\\]"):  # a tag from before outputs were listed
        parse_model_info(String(data=msg.data.replace('"outputs"', '"other"')))
    with pytest.raises(ValueError, match="outputs must be a list of topic names, got 'depth'"):
        parse_model_info(String(data=msg.data.replace('["depth","points"]', '"depth"')))
