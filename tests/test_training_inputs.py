"""Damaged training inputs: calibration files, MCAP chunks and their CRCs, SQLite3 pages, repeated and
backwards stamps, and frames skipped in training, counted in one log line per epoch."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import McapReader
from test_kitti_raw import DATE, DRIVE, random_images, write_drive, write_oxts
from test_rosbag_reader import camera_info_msg, image_msg, write_bag

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig, load_config
from ssim_depth_core.data.bagio import CameraBagWriter
from ssim_depth_core.data.kitti_raw import KittiRawSequence
from ssim_depth_core.data.rosbag import CHUNK_CRC_OFFSET, RosbagSequence
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.triplets import SkippedSample, SkipTally, build_samples
from ssim_depth_core.imaging import FrameError
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
CALIB = f"{DATE}/calib_cam_to_cam.txt"

# --- calibration --------------------------------------------------------------------------------------------


def edit_calib(root: Path, key: str, line: str | None) -> Path:
    """Replace the ``key:`` line of the drive's calibration by ``line`` (None: remove it)."""
    path = root / CALIB
    lines = [(line if text.startswith(f"{key}:") else text) for text in path.read_text().splitlines()]
    path.write_text("\n".join(text for text in lines if text is not None) + "\n")
    return path


P_02 = "P_rect_02: 4.0e+01 0.0 2.35e+01 2.4 0.0 3.0e+01 1.15e+01 -0.3 0.0 0.0 1.0 2.7e-03"


@pytest.mark.parametrize(
    ("key", "line", "message"),
    [
        (
            "P_rect_02",
            P_02.replace("4.0e+01", "nan", 1),
            r":3: 'P_rect_02' value 1 is 'nan': expected a finite",
        ),
        ("P_rect_02", P_02.replace("2.4", "inf"), r":3: 'P_rect_02' value 4 is 'inf'"),
        ("P_rect_02", P_02.replace("3.0e+01", "3.O"), r":3: 'P_rect_02' value 6 is '3.O'"),
        ("P_rect_02", P_02.replace("4.0e+01", "0", 1), r": P_rect_02, S_rect_02: .*got fx=0.0"),
        ("P_rect_02", None, r": missing 'P_rect_02'"),
        ("P_rect_02", "P_rect_02: 40 0 23.5", r": P_rect_02, S_rect_02: .*12 values\), got 3"),
        (
            "S_rect_02",
            "S_rect_02: 64.5 32",
            r": 'S_rect_02' must be two positive whole numbers .*got 64.5 32",
        ),
        ("S_rect_02", "S_rect_02: 64", r": 'S_rect_02' must be two positive whole numbers .*got 64$"),
        # the stereo partner's x offset: unused by monocular training, still refused (a NaN baseline)
        (
            "P_rect_03",
            "P_rect_03: 40 0.0 23.5 nan 0.0 30 11.5 2.3 0.0 0.0 1.0 2.9e-03",
            r":5: 'P_rect_03' value 4",
        ),
        ("calib_time", "P_rect_02: 1 2", r":3: 'P_rect_02' appears again \(first on line 1\)"),
    ],
)
def test_a_bad_calibration_names_the_file_key_and_value(tmp_path, key, line, message):
    write_drive(tmp_path, random_images(3, height=32, width=64))
    calib = edit_calib(tmp_path, key, line)
    with pytest.raises(ValueError, match=f"^{calib}{message}"):
        KittiRawSequence(tmp_path, DATE, DRIVE)


def test_an_unreadable_calibration_file_names_it(tmp_path):
    write_drive(tmp_path, random_images(3))
    calib = tmp_path / CALIB
    calib.write_bytes(b"P_rect_02: \xff\xfe\x00 garbage")
    with pytest.raises(ValueError, match=f"^{calib}: cannot read the calibration file .*utf-8"):
        KittiRawSequence(tmp_path, DATE, DRIVE)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nan", r"calib_cam_to_cam\.txt:3: 'P_rect_02' value 1 is 'nan': expected a finite number"),
        ("empty drive", r"drive_0002_sync/image_02/data: no %010d\.png or %010d\.jpg frames"),
    ],
)
def test_training_stops_with_one_line_naming_the_file(tmp_path, damage, message):
    """A NaN focal length once crashed inside loss.backward() (exit 139): now one error line, exit 2."""
    write_drive(tmp_path, random_images(6, height=64, width=128))
    if damage == "nan":
        edit_calib(tmp_path, "P_rect_02", P_02.replace("4.0e+01", "nan", 1))
    else:
        (tmp_path / DATE / "2011_09_26_drive_0002_sync" / "image_02" / "data").mkdir(parents=True)
    command = [sys.executable, str(ROOT / "training" / "train.py"), "--config", str(CONFIG)]
    command += ["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "loss.weights.velocity=0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].split(" ERROR ssim_depth: ")[1].startswith(str(tmp_path))
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in output


# --- KITTI timestamps ---------------------------------------------------------------------------------------


def test_repeated_and_backwards_kitti_stamps_lose_odometry_for_their_frames(tmp_path, caplog):
    stamps = [f"2011-09-26 13:02:25.{i}00000000" for i in range(8)]
    stamps[3] = stamps[2]  # repeated
    stamps[6] = "2011-09-26 13:02:25.450000000"  # before frame 5's
    write_drive(tmp_path, random_images(8), stamps=stamps)
    write_oxts(tmp_path / DATE / DRIVE, [0.1 * i for i in range(8)], [(2.0, 0.0, 0.0)] * 8)
    with caplog.at_level(logging.WARNING):
        sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    # 2 m/s from 0 s: the odometer is 2 t at a trusted stamp, NaN on both sides of a bad step
    expected = [0.0, 0.2, np.nan, np.nan, 0.8, np.nan, np.nan, 1.4]
    np.testing.assert_allclose(sequence.odometer, expected, rtol=0, atol=1e-6)
    assert (
        "image_02/timestamps.txt: frames stamped no later than the frame before them: 3, 6 (2 of 8)"
        in caplog.text
    )
    assert np.array_equal(sequence.image(3), random_images(8)[3])  # the frames themselves are still used


# --- MCAP chunks --------------------------------------------------------------------------------------------

BIG_H, BIG_W = 256, 256  # 192 KiB a frame: rosbags closes a chunk after 1 MiB, so 6 frames to a chunk


def big_frames(count: int) -> list[np.ndarray]:
    return random_images(count, height=BIG_H, width=BIG_W, seed=7)


def camera_bag(path: Path, count: int) -> tuple[Path, list[int]]:
    """A bag of ``count`` frames by CameraBagWriter (chunks with CRCs); returns it and the stamps."""
    camera = Intrinsics(200.0, 200.0, 127.5, 127.5, BIG_W, BIG_H)
    stamps = [1_000_000_000 + 100_000_000 * i for i in range(count)]
    with CameraBagWriter(path, camera) as writer:
        for image, stamp in zip(big_frames(count), stamps, strict=True):
            writer.write(image, stamp)
    return path, stamps


def mcap_of(bag: Path) -> Path:
    return next(bag.glob("*.mcap"))


def chunks_of(mcap: Path) -> list:
    storage = McapReader(mcap)
    storage.open()
    chunks = list(storage.chunks)
    storage.close()
    return chunks


def image_count(chunk, bag: Path) -> int:
    """Image messages in ``chunk``, by rosbags' own message index."""
    with AnyReader([bag]) as reader:
        image_id = next(c.id for c in reader.connections if c.topic.endswith("image_raw"))
    return chunk.channel_count.get(image_id, 0)


def records_of(data: bytes, chunk) -> tuple[int, bytes]:
    """(offset, bytes) of an uncompressed chunk's records, located by the MCAP spec's field order."""
    start = chunk.chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4  # opcode, length, start, end, size, crc
    name_length = struct.unpack_from("<I", data, start)[0]
    length = struct.unpack_from("<Q", data, start + 4 + name_length)[0]
    offset = start + 4 + name_length + 8
    return offset, data[offset : offset + length]


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(data)


def test_our_bags_carry_the_crc_of_each_chunk(tmp_path):
    bag, _ = camera_bag(tmp_path / "bag", 14)
    mcap = mcap_of(bag)
    data, chunks = mcap.read_bytes(), chunks_of(mcap)
    assert len(chunks) == 3
    for chunk in chunks:
        crc = struct.unpack_from("<I", data, chunk.chunk_start_offset + CHUNK_CRC_OFFSET)[0]
        assert crc == zlib.crc32(records_of(data, chunk)[1]) != 0
    # rosbags checks a non-zero CRC by itself: a flipped byte makes its reader fail
    flip(mcap, records_of(data, chunks[1])[0] + 5000)
    with AnyReader([bag]) as reader, pytest.raises(ReaderError, match="Chunk checksum mismatch"):
        list(reader.messages())


def test_a_chunk_failing_its_crc_is_skipped_and_its_frames_counted(tmp_path, caplog):
    bag, stamps = camera_bag(tmp_path / "bag", 14)
    mcap = mcap_of(bag)
    chunks = chunks_of(mcap)
    lost = image_count(chunks[1], bag)
    flip(mcap, records_of(mcap.read_bytes(), chunks[1])[0] + 5000)  # inside an image's pixels
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(bag, intrinsics=Intrinsics(200.0, 200.0, 127.5, 127.5, BIG_W, BIG_H))
    assert len(sequence) == 14 - lost and lost > 0
    assert (
        f"{bag}: skipping 1 damaged MCAP chunks and their messages ({lost} on "
        f"/kitti/camera_color_left/camera_info, {lost} on /kitti/camera_color_left/image_raw): bag.mcap "
        f"chunk at byte {chunks[1].chunk_start_offset}: ReaderError: Chunk checksum mismatch." in caplog.text
    )
    assert f"skipped {lost} in damaged chunks" in caplog.text
    # every frame left reads back with its own pixels, in this process and in a pickled copy (a worker)
    by_stamp = dict(zip(stamps, big_frames(14), strict=True))
    for index, stamp in enumerate(np.round(sequence.timestamps * 1e9).astype(np.int64)):
        assert np.array_equal(sequence.image(index), by_stamp[int(stamp)])
    clone = pickle.loads(pickle.dumps(sequence))
    assert np.array_equal(clone.image(len(clone) - 1), by_stamp[stamps[-1]])


def test_a_broken_record_in_a_chunk_without_crc_is_skipped(tmp_path, caplog):
    """The issue's case: a record length field corrupted, in a bag whose chunks carry no CRC (rosbags' own
    writer), used to end in rosbags' ReaderError traceback."""
    images = big_frames(14)
    bag = write_bag(
        tmp_path / "bag",
        {"/cam/image": [(i + 1, image_msg(im, "rgb8", i + 1)) for i, im in enumerate(images)]},
    )
    mcap = mcap_of(bag)
    chunk = chunks_of(mcap)[1]
    data = bytearray(mcap.read_bytes())
    offset = records_of(data, chunk)[0]
    while data[offset] != 0x05:  # the chunk's first Message record: opcode, uint64 length
        offset += 9 + struct.unpack_from("<Q", data, offset + 1)[0]
    struct.pack_into("<Q", data, offset + 1, 2**40)
    mcap.write_bytes(data)
    with AnyReader([bag]) as reader, pytest.raises(ReaderError, match="Truncated record"):
        list(reader.messages())  # the reference: rosbags alone
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(bag, intrinsics=Intrinsics(200.0, 200.0, 127.5, 127.5, BIG_W, BIG_H))
    assert "3 of 3 MCAP chunks of bag.mcap carry no CRC" in caplog.text
    assert f"chunk at byte {chunk.chunk_start_offset}: ReaderError: Truncated record" in caplog.text
    assert len(sequence) == 14 - chunk.channel_count[1]


def test_a_bag_whose_every_chunk_is_damaged_is_one_line_naming_it(tmp_path):
    bag, _ = camera_bag(tmp_path / "bag", 3)  # one chunk
    mcap = mcap_of(bag)
    (chunk,) = chunks_of(mcap)
    flip(mcap, records_of(mcap.read_bytes(), chunk)[0] + 100)
    with pytest.raises(
        ValueError, match=f"^{mcap}: all 1 MCAP chunks are damaged \\(first: ReaderError: Chunk"
    ):
        RosbagSequence(bag)


def test_damage_found_while_training_is_a_frame_error(tmp_path):
    bag, stamps = camera_bag(tmp_path / "bag", 14)
    sequence = RosbagSequence(bag)
    mcap = mcap_of(bag)
    chunks = chunks_of(mcap)
    flip(mcap, records_of(mcap.read_bytes(), chunks[2])[0] + 5000)
    with pytest.raises(
        FrameError, match=f"^{bag} topic .*damaged storage: ReaderError: Chunk checksum mismatch"
    ):
        sequence.image(13)
    assert np.array_equal(sequence.image(0), big_frames(1)[0])


def test_truncated_and_damaged_storage_files_are_one_line_errors(tmp_path):
    bag, _ = camera_bag(tmp_path / "mcap", 3)
    mcap = mcap_of(bag)
    mcap.write_bytes(mcap.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=f"^{bag}: cannot open rosbag2: .*File end magic is invalid"):
        RosbagSequence(bag)
    images = big_frames(8)
    messages = [(i + 1, image_msg(im, "rgb8", i + 1)) for i, im in enumerate(images)]
    bag = write_bag(
        tmp_path / "db3", {"/cam/image": messages, "/cam/camera_info": [(1, camera_info_msg(1))]}, "sqlite3"
    )
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    data[9 * 4096 : 9 * 4096 + 16] = b"\xff" * 16  # a b-tree page's header: SQLite has no CRC, only structure
    db.write_bytes(data)
    with pytest.raises(ValueError, match=f"^{bag}: damaged storage: .*database disk image is malformed"):
        RosbagSequence(bag)


# --- bag stamps ---------------------------------------------------------------------------------------------


def test_repeated_header_stamps_are_dropped_and_late_ones_reordered(tmp_path, caplog):
    images = random_images(6, height=8, width=16)
    stamps = [100, 200, 200, 400, 300, 500]  # a repeat of 200 (the first received is kept); 300 after 400
    messages = [
        (i + 1, image_msg(im, "rgb8", s)) for i, (im, s) in enumerate(zip(images, stamps, strict=True))
    ]
    bag = write_bag(tmp_path / "bag", {"/cam/image": messages, "/cam/camera_info": [(1, camera_info_msg(1))]})
    with caplog.at_level(logging.INFO):
        sequence = RosbagSequence(bag)
    assert sequence.timestamps.tolist() == [1e-7, 2e-7, 3e-7, 4e-7, 5e-7]
    for index, source in enumerate([0, 1, 4, 3, 5]):
        assert np.array_equal(sequence.image(index), images[source])
    assert (
        f"{bag}:/cam/image: 5 frames, ordered by header stamp; skipped 1 repeating an earlier frame's header "
        "stamp; 1 arrived after a frame stamped later (reordered)" in caplog.text
    )


# --- skipped samples in training ----------------------------------------------------------------------------


def test_skip_tally_counts_by_source_and_reason_with_the_first_message():
    tally = SkipTally()
    tally.add([SkippedSample("a", "unreadable frame", "a/1.png: truncated")])
    tally.add(
        [SkippedSample("b", "unreadable frame", "b:3")] * 2 + [SkippedSample("a", "unreadable frame", "x")]
    )
    assert tally.total() == 4
    assert tally.summary() == (
        "2 x a: unreadable frame (first: a/1.png: truncated); 2 x b: unreadable frame (first: b:3)"
    )


def test_frames_of_a_bad_size_or_encoding_are_counted_in_the_epoch_log(tmp_path, caplog):
    images = random_images(10, height=64, width=128)
    messages = [(i + 1, image_msg(im, "rgb8", 100_000_000 * (i + 1))) for i, im in enumerate(images)]
    half = image_msg(images[3][:32], "rgb8", 400_000_000)  # half the height
    messages[3] = (4, half)
    messages[6] = (7, image_msg(images[6], "yuv422", 700_000_000))
    k = [100.0, 0.0, 63.5, 0.0, 100.0, 31.5, 0.0, 0.0, 1.0]
    info = dataclasses.replace(camera_info_msg(1, k=k, p=[0.0] * 12), width=128, height=64)
    bag = write_bag(tmp_path / "bag", {"/cam/image": messages, "/cam/camera_info": [(1, info)]})
    tiny = [
        "data.height=64",
        "data.width=128",
        "optim.batch_size=2",
        "optim.epochs=1",
        "loss.weights.velocity=0",
    ]
    config = load_config(CONFIG, [*tiny, "data.train_split=none", "data.val_split=none"])
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(config, bag, tmp_path / "run")
        trainer.fit()
    # targets 1..8; frame 3 spoils targets 2-4, frame 6 targets 5-7: 6 of the 8 samples
    assert trainer.skipped_samples == 6
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1: skipped")]
    name = f"{bag}:/cam/image"
    assert line.startswith(f"epoch 1: skipped 6 of 8 samples: 3 x {name}: ")
    assert f"3 x {name}: frame size is not the calibrated one (first: {name} frame 3: image is 128x32" in line
    assert f"3 x {name}: unreadable frame (first: {bag} topic /cam/image message #6" in line
    assert "unsupported encoding 'yuv422'" in line


def test_split_entries_beyond_a_drive_or_without_neighbours_are_dropped_each_with_its_reason(
    tiny_drive, tmp_path, caplog
):
    """The 10-frame drive: frame 0 has no -1 neighbour, frame 50 does not exist; frames 1 and 8 are kept."""
    (drive,) = [p for p in tiny_drive.glob("*/*_sync")]
    split = tmp_path / "split.txt"
    split.write_text("".join(f"{drive.parent.name}/{drive.name} {frame} l\n" for frame in (0, 1, 8, 50)))
    sequences = open_sequences(tiny_drive, DataConfig())
    with caplog.at_level(logging.WARNING):
        samples = build_samples(sequences, [0, -1, 1], split)
    assert [frame for _, frame in samples] == [1, 8]
    assert f"{split}: dropped 1 entries without neighbours [0, -1, 1]" in caplog.text
    beyond = (
        f"{split}: dropped 1 entries beyond their drive's frames (first: {drive.parent.name}/{drive.name} 50"
    )
    assert f"{beyond} (10 frames))" in caplog.text


def test_a_split_file_path_that_is_not_there_is_named_as_such(tmp_path):
    from ssim_depth_core.data.sources import resolve_split

    missing = "runs/elsewhere/splits/synthetic/train_files.txt"
    with pytest.raises(FileNotFoundError, match=f"^split file not found: {missing}$"):
        resolve_split(tmp_path, missing)
    with pytest.raises(ValueError, match="split 'train' is not a file, and .*/train_files.txt matched none"):
        resolve_split(tmp_path, "train")  # a name: looked up in DATA/splits
