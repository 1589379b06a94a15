"""Training on damaged data: damaged copies of one small synthetic drive, one short training run on each.

One drive is rendered (``generate_dataset``: KITTI raw layout and its MCAP bag, whose chunks carry CRCs as
``ros2 bag record`` writes them); a SQLite3 copy of the bag and an MCAP copy without chunk CRCs (as rosbags'
writer leaves them) are made from it. Each case damages a fresh copy, then ``training/train.py`` (the CPU
recipe, one epoch, no validation) runs on it in its own process, so a crash is its exit code.

Cases (name: what is damaged):
    bag flips: N random bytes of the bag file XOR-ed with random non-zero bytes (--seeds trials each);
    bag truncated: the file cut at half its length;
    record length: a Message record's length field (inside a chunk) set to 2^40;
    bag stamps: one image's header stamp repeated, one stamped before its predecessor;
    bag frames: one image of half the height, one in an unsupported encoding (yuv422);
    truncated PNG: one frame of the KITTI drive cut to 100 bytes;
    calibration: P_rect_02 missing, a garbled number, NaN, fx = 0;
    timestamps: one repeated, one backwards (image_02/timestamps.txt);
    empty drive: a second drive folder with an empty image_02/data.

Recorded per case (printed as a markdown table; ``--json`` writes it): the outcome -- trained (with the
samples skipped, from the checkpoint, and the data warnings of its log), stopped (the one-line error), a
traceback, or a crash (signal) -- and the exit code. For bag cases also how many frames of the damaged bag
read back with other pixels than the intact bag's frame of the same stamp without any error ("silent"): the
damage nothing detected.

    .venv/bin/python bench/fuzz_training.py --json /tmp/fuzz_training.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.storage_mcap import McapReader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_process import machine  # noqa: E402

from ssim_depth_core.checkpoint import load_checkpoint  # noqa: E402
from ssim_depth_core.data.bagio import STORAGE_PLUGINS, default_typestore, write_chunk_crcs  # noqa: E402
from ssim_depth_core.data.rosbag import CHUNK_CRC_OFFSET, IMAGE_TYPE, RosbagSequence, stamp_ns  # noqa: E402
from ssim_depth_core.data.synthetic import generate_dataset  # noqa: E402
from ssim_depth_core.imaging import FrameError  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIG = REPOSITORY / "training" / "configs" / "synthetic_cpu.yaml"
TRAIN = [
    "data.height=64",
    "data.width=128",
    "data.num_workers=0",
    "data.train_split=none",
    "data.val_split=none",
    "optim.batch_size=8",
    "optim.epochs=1",
]
MESSAGE_OPCODE = 0x05  # MCAP Message record


def copy_bag(bag: Path, out: Path) -> Path:
    shutil.copytree(bag, out)
    return out


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def rewrite_bag(
    bag: Path, out: Path, storage: str = "mcap", edit: Callable[[int, Any], Any] | None = None
) -> Path:
    """A copy of ``bag`` in ``storage``, each image message passed through ``edit(number, msg)``."""
    typestore = default_typestore()
    with (
        AnyReader([bag]) as reader,
        Writer(out, version=9, storage_plugin=STORAGE_PLUGINS[storage]) as writer,
    ):
        connections = {
            c.topic: writer.add_connection(c.topic, c.msgtype, typestore=typestore)
            for c in reader.connections
        }
        number = 0
        for connection, receive, raw in reader.messages():
            if edit is not None and connection.msgtype == IMAGE_TYPE:
                msg = edit(number, reader.deserialize(raw, connection.msgtype))
                raw, number = typestore.serialize_cdr(msg, IMAGE_TYPE), number + 1
            writer.write(connections[connection.topic], receive, raw)
    if storage == "mcap":
        write_chunk_crcs(storage_file(out))
    return out


def chunks(mcap: Path) -> list:
    storage = McapReader(mcap)
    storage.open()
    found = list(storage.chunks)
    storage.close()
    return found


def without_crcs(bag: Path, out: Path) -> Path:
    """A copy of the MCAP ``bag`` whose chunk CRC fields are 0 (none), as rosbags' writer leaves them."""
    copy_bag(bag, out)
    mcap = storage_file(out)
    with mcap.open("r+b") as file:
        for chunk in chunks(mcap):
            file.seek(chunk.chunk_start_offset + CHUNK_CRC_OFFSET)
            file.write(b"\0\0\0\0")
    return out


def flip_bytes(bag: Path, out: Path, count: int, seed: int) -> Path:
    copy_bag(bag, out)
    path = storage_file(out)
    data, rng = bytearray(path.read_bytes()), random.Random(seed)
    for position in rng.sample(range(len(data)), count):
        data[position] ^= rng.randrange(1, 256)
    path.write_bytes(data)
    return out


def truncate(bag: Path, out: Path) -> Path:
    copy_bag(bag, out)
    path = storage_file(out)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


def corrupt_record_length(bag: Path, out: Path) -> Path:
    """Set the length field of the fifth Message record of the second chunk to 2^40 (MCAP spec: a record is
    opcode (uint8), length (uint64), content; a chunk's records follow its compression name and the records'
    length)."""
    copy_bag(bag, out)
    mcap = storage_file(out)
    chunk = chunks(mcap)[1]
    data = bytearray(mcap.read_bytes())
    # after the CRC: the compression name (uint32 length + bytes), the records' length (uint64)
    position = chunk.chunk_start_offset + CHUNK_CRC_OFFSET + 4 + 4 + len(chunk.compression) + 8
    messages = 0
    while True:
        if data[position] == MESSAGE_OPCODE:
            messages += 1
            if messages == 5:
                break
        position += 1 + 8 + struct.unpack_from("<Q", data, position + 1)[0]
    struct.pack_into("<Q", data, position + 1, 2**40)
    mcap.write_bytes(data)
    return out


def restamp() -> Callable[[int, Any], Any]:
    """An edit for :func:`rewrite_bag`: image 10 repeats image 9's header stamp; image 20 is stamped 1 ms
    before image 19."""
    previous = 0

    def edit(number: int, msg: Any) -> Any:
        nonlocal previous
        stamp = {10: previous, 20: previous - 1_000_000}.get(number, stamp_ns(msg.header))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        previous = stamp
        return msg

    return edit


def bad_frames(number: int, msg: Any) -> Any:
    """Image 10 keeps its upper half only (half the height); image 20 claims encoding yuv422."""
    if number == 10:
        msg.height //= 2
        msg.data = msg.data[: msg.step * msg.height].copy()
    if number == 20:
        msg.encoding = "yuv422"
    return msg


def kitti_case(root: Path, out: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of the drive's date folder (no bags) under ``out``, damaged by ``damage(date folder)``."""
    date = next(d for d in root.iterdir() if (d / "calib_cam_to_cam.txt").is_file())
    shutil.copytree(date, out / date.name)
    damage(out / date.name)
    return out


def drive_dir(date: Path) -> Path:
    return next(d for d in date.iterdir() if d.is_dir())


def calibration(key: str, first: str | None) -> Callable[[Path], None]:
    """A damage for :func:`kitti_case`: the first value of ``key`` in calib_cam_to_cam.txt replaced by
    ``first`` (None: the key's line removed)."""

    def damage(date: Path) -> None:
        path = date / "calib_cam_to_cam.txt"
        lines = []
        for line in path.read_text().splitlines():
            if line.startswith(f"{key}:"):
                if first is None:
                    continue
                line = " ".join([f"{key}:", first, *line.split()[2:]])
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")

    return damage


def timestamps(first: int, second: int, swap: bool) -> Callable[[Path], None]:
    """A damage for :func:`kitti_case`: image_02/timestamps.txt with line ``second`` a copy of line ``first``
    or (``swap``) the two swapped."""

    def damage(date: Path) -> None:
        path = drive_dir(date) / "image_02" / "timestamps.txt"
        lines = path.read_text().splitlines()
        if swap:
            lines[first], lines[second] = lines[second], lines[first]
        else:
            lines[second] = lines[first]
        path.write_text("\n".join(lines) + "\n")

    return damage


def truncate_png(date: Path) -> None:
    png = drive_dir(date) / "image_02" / "data" / "0000000010.png"
    png.write_bytes(png.read_bytes()[:100])


def empty_drive(date: Path) -> None:
    empty = date / f"{drive_dir(date).name.replace('_sync', '')}9_sync" / "image_02" / "data"
    empty.mkdir(parents=True)
    (empty.parent / "timestamps.txt").write_text("")


def train(data: Path, out: Path, timeout: float) -> dict[str, Any]:
    """One short training run on ``data`` in its own process: exit code, outcome, data warnings."""
    command = [sys.executable, str(REPOSITORY / "training" / "train.py"), "--config", str(CONFIG)]
    command += ["--data", str(data), "--out", str(out)]
    for item in TRAIN:
        command += ["--set", item]
    tic = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        code, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, log = None, (err.stdout or b"").decode() + (err.stderr or b"").decode()
    seconds = time.perf_counter() - tic
    # "<date> <time> LEVEL logger: message"; the data warnings: the data modules' and the epoch's skip summary
    lines = [
        line.split(" ", 3)[2:] for line in log.splitlines() if line[:2].isdigit() and line.count(" ") >= 3
    ]
    warnings = [  # the data modules' summaries (not each skipped sample: the epoch's summary counts them)
        message
        for level, text in lines
        for message in text.split(": ", 1)[1:]
        if level == "WARNING"
        and (text.startswith("ssim_depth_core.data") or message.startswith("epoch "))
        and not message.startswith("skipping sample")
    ]
    errors = [text.split(": ", 1)[1] for level, text in lines if level == "ERROR"]
    if code is None:
        outcome = f"timed out after {timeout:.0f} s"
    elif "Traceback (most recent call last)" in log:
        outcome = "traceback: " + log.strip().splitlines()[-1]
    elif code < 0:
        outcome = f"crashed: signal {-code}"
    elif code:
        outcome = "stopped: " + (errors[-1] if errors else log.strip().splitlines()[-1])
    else:
        skipped = load_checkpoint(out / "checkpoints" / "last.pt")["skipped_samples"]
        outcome = f"trained, {skipped} samples skipped"
    return {"exit_code": code, "outcome": outcome, "warnings": warnings, "seconds": round(seconds, 1)}


def silent_frames(bag: Path, intact: RosbagSequence) -> int | None:
    """Frames of the damaged ``bag`` that read without error but with other pixels than the intact bag's frame
    of the same stamp; None when the bag does not open."""
    try:
        damaged = RosbagSequence(bag)
    except ValueError:
        return None
    reference = {stamp: index for index, stamp in enumerate(intact.timestamps)}
    silent = 0
    for index, stamp in enumerate(damaged.timestamps):
        try:
            image = damaged.image(index)
        except FrameError:
            continue
        if stamp not in reference or not np.array_equal(image, intact.image(reference[stamp])):
            silent += 1
    return silent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=30, help="frames of the synthetic drive (several MCAP chunks)"
    )
    parser.add_argument("--size", default="416x128", help="WIDTHxHEIGHT of the rendered frames")
    parser.add_argument("--seeds", type=int, default=3, help="trials of each random bag case")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per training run")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="fuzz_training_"))
    work.mkdir(parents=True, exist_ok=True)
    root = generate_dataset(
        work / "clean", seed=0, drives=1, frames=args.frames, width=width, height=height, progress=False
    )
    bags = {"mcap": next((root / "bags").iterdir())}
    bags["sqlite3"] = rewrite_bag(bags["mcap"], work / "clean_sqlite3", storage="sqlite3")
    bags["mcap without CRCs"] = without_crcs(bags["mcap"], work / "clean_nocrc")
    intact = RosbagSequence(bags["mcap"])

    cases: list[tuple[str, Callable[[Path], Path], Path | None]] = []
    for storage, bag in bags.items():
        cases.append((f"{storage} bag, intact", lambda out, bag=bag: copy_bag(bag, out), bag))
        for count in (1, 10):
            for seed in range(args.seeds):
                cases.append(
                    (
                        f"{storage} bag, {count} flipped bytes (seed {seed})",
                        lambda out, bag=bag, count=count, seed=seed: flip_bytes(bag, out, count, seed),
                        bag,
                    )
                )
        cases.append((f"{storage} bag, truncated at half", lambda out, bag=bag: truncate(bag, out), bag))
    for storage in ("mcap", "mcap without CRCs"):
        cases.append(
            (
                f"{storage} bag, a record length = 2^40",
                lambda out, bag=bags[storage]: corrupt_record_length(bag, out),
                bags[storage],
            )
        )
    for name, edit in (
        ("repeated and backwards stamps", restamp()),
        ("a half-height and a yuv422 frame", bad_frames),
    ):
        cases.append(
            (f"mcap bag, {name}", lambda out, edit=edit: rewrite_bag(bags["mcap"], out, edit=edit), None)
        )
    kitti = [
        ("KITTI, intact", lambda date: None),
        ("KITTI, truncated PNG", truncate_png),
        ("KITTI calib, P_rect_02 missing", calibration("P_rect_02", None)),
        ("KITTI calib, garbled number in P_rect_02", calibration("P_rect_02", "7.2e+O2")),
        ("KITTI calib, NaN in P_rect_02", calibration("P_rect_02", "nan")),
        ("KITTI calib, fx = 0 in P_rect_02", calibration("P_rect_02", "0")),
        ("KITTI timestamps, one repeated", timestamps(9, 10, swap=False)),
        ("KITTI timestamps, two swapped", timestamps(19, 20, swap=True)),
        ("KITTI, an empty drive", empty_drive),
    ]
    for name, damage in kitti:
        cases.append((name, lambda out, damage=damage: kitti_case(root, out, damage), None))

    results = []
    for number, (name, make, reference) in enumerate(cases):
        data = make(work / f"case{number}" / "data")
        result = {"case": name, **train(data, work / f"case{number}" / "run", args.timeout)}
        if reference is not None:
            result["silent_frames"] = silent_frames(data, intact)
        results.append(result)
        print(f"{name}: {result['outcome']} (exit {result['exit_code']}, {result['seconds']} s)", flush=True)
        shutil.rmtree(work / f"case{number}")

    print(f"\n{datetime.date.today().isoformat()}, {machine()}; {args.frames} frames at {args.size}\n")
    print("| case | outcome | exit code | silent frames | data warnings |")
    print("|---|---|---|---|---|")
    for r in results:
        silent = (
            "" if "silent_frames" not in r else ("-" if r["silent_frames"] is None else r["silent_frames"])
        )
        text = (
            f"| {r['case']} | {r['outcome']} | {r['exit_code']} | {silent} | {'<br>'.join(r['warnings'])} |"
        )
        print(text.replace(f"{work}/", "WORK/"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
