"""Image decoding with a pixel limit: sizes read from PNG/JPEG headers, refused before any decoding."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from ssim_depth_core.imaging import (
    FrameError,
    check_pixel_count,
    decode_image,
    encoded_image_size,
    read_depth_png,
    read_image,
)

LIMIT = 16_000_000


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A complete, valid 1-bit greyscale PNG of width x height black pixels (about 50 KB)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def jpeg(image: np.ndarray, progressive: bool = False) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)


def test_header_sizes_match_the_decoded_images(image):
    ok, png = cv2.imencode(".png", image)
    assert ok
    assert encoded_image_size(png.tobytes()) == (40, 24)
    assert encoded_image_size(png) == (40, 24)  # an array, as message data arrives
    for progressive in (False, True):
        assert encoded_image_size(jpeg(image, progressive)) == (40, 24)
    for data in (b"", b"\x89PNG\r\n\x1a\n\x00", b"\xff\xd8\xff\xe0\x00\x10", b"BM" + bytes(60)):
        assert encoded_image_size(data) is None


def test_a_small_png_declaring_20000x20000_is_refused_before_decoding():
    data = huge_png()
    assert len(data) < 200_000  # decoded, it would be 20000 * 20000 * 3 bytes = 1.2 GB
    assert encoded_image_size(data) == (20000, 20000)
    with pytest.raises(
        FrameError, match=r"msg 7 \(size from its header\): 20000x20000 = 400000000 pixels.*16000000"
    ):
        decode_image(data, "msg 7", max_pixels=LIMIT)


def test_a_jpeg_declaring_a_huge_size_is_refused(image):
    data = bytearray(jpeg(image))
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 20000, 30000)
    assert encoded_image_size(bytes(data)) == (30000, 20000)
    with pytest.raises(FrameError, match=r"30000x20000 = 600000000 pixels, more than the limit of 16000000"):
        decode_image(bytes(data), "jpeg", max_pixels=LIMIT)


def test_images_within_the_limit_decode_and_other_formats_are_refused(image):
    ok, png = cv2.imencode(".png", image)
    assert ok
    rgb = decode_image(png.tobytes(), "png", max_pixels=40 * 24)  # exactly the limit is allowed
    np.testing.assert_array_equal(rgb, image[..., ::-1])
    assert decode_image(jpeg(image), "jpeg", max_pixels=LIMIT).shape == (24, 40, 3)
    with pytest.raises(FrameError, match=r"png \(size from its header\): 40x24 = 960 pixels.*limit of 959"):
        decode_image(png.tobytes(), "png", max_pixels=40 * 24 - 1)
    ok, bmp = cv2.imencode(".bmp", image)
    assert ok
    assert decode_image(bmp.tobytes(), "bmp").shape == (24, 40, 3)  # no limit: any format OpenCV reads
    with pytest.raises(FrameError, match=r"bmp: not a PNG or JPEG with a readable header"):
        decode_image(bmp.tobytes(), "bmp", max_pixels=LIMIT)
    check_pixel_count(4000, 4000, LIMIT, "raw")
    with pytest.raises(FrameError, match=r"raw: 4001x4000 = 16004000 pixels"):
        check_pixel_count(4001, 4000, LIMIT, "raw")


def test_a_header_over_opencvs_own_pixel_limit_is_a_frame_error_naming_the_source(tmp_path, image):
    """OpenCV refuses a header declaring more than 2^30 pixels (CV_IO_MAX_IMAGE_PIXELS) with cv2.error, which
    used to end a training run; it is a FrameError naming the frame, so the sample is skipped and counted."""

    def header_png(bit_depth: int, colour_type: int) -> bytes:  # 40000 x 30000 declared, a few bytes of data
        ihdr = struct.pack(">IIBBBBB", 40000, 30000, bit_depth, colour_type, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 8)
        return (
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b"")
        )

    assert 40000 * 30000 > 2**30
    png = header_png(8, 2)  # 8-bit RGB
    data = bytearray(jpeg(image))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 40000)  # height, width
    for encoded, source in ((png, "bag topic /cam message #3"), (bytes(data), "frame.jpg")):
        with pytest.raises(
            FrameError,
            match=rf"^{source}: cannot decode image \({len(encoded)} bytes, header declares 40000x30000",
        ):
            decode_image(encoded, source)
    frame = tmp_path / "0000000003.png"
    frame.write_bytes(png)
    with pytest.raises(FrameError, match=rf"^{frame}: cannot decode image"):
        read_image(frame)
    depth = tmp_path / "depth.png"  # the KITTI depth format: 16-bit greyscale
    depth.write_bytes(header_png(16, 0))
    with pytest.raises(FrameError, match=rf"^{depth}: cannot decode image"):
        read_depth_png(depth)
