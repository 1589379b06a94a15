"""Fuzzing the depth node: malformed messages of every kind from a real publisher, between valid frames.

Two depth nodes run as separate processes (bench/node_process.py), one on raw images (``image``), one on
compressed ones (``image/compressed``, parameter ``compressed``), both with points and preview on; their
image and camera_info subscriptions are made reliable (qos_overrides) so that every message sent reaches the
node. This process publishes, burst after burst, ``--burst`` messages drawn at random from the kinds below
(about one in ten a valid frame), ``--gap-ms`` apart, then a valid probe frame (a stamp of its own) to each
node and waits for that frame's depth: "answered" means the node served the probe after the burst.

Kinds (name: what is wrong):
    Image: unknown and unsupported encodings (yuv422, bayer_*, 16UC1, 32FC3, ...), step < row, step/width/
    height that disagree with the data length, sizes claiming gigabytes with a few bytes, zero sizes,
    is_bigendian flipped (and set to values other than 0/1), empty frame_id, zero, negative and backwards
    stamps, nanosec >= 1e9, degenerate but valid sizes (1x1, one row, one column), all fields random;
    CompressedImage: truncated and corrupt JPEG/PNG, empty data, random bytes, headers claiming 65535x65535,
    formats that disagree with the data, other file types (BMP, GIF, TIFF), valid unusual PNGs (16-bit,
    grey, RGBA, 1x1);
    CameraInfo (to both nodes): zero, negative, NaN, inf focal lengths, K all zero, a size of another aspect
    ratio, 1x1 and 2^32-1 sizes, NaN in P, long D, unknown distortion model.

Recorded (printed as a table, ``--json`` writes it): messages sent per kind, node crashes (exit before the
end, must be 0), probes answered (must be all), the node's log lines per second by severity (the node
throttles its per-frame warnings; "other" = lines the node did not write through its logger, e.g.
libjpeg/libpng messages), the resident memory (VmRSS) of each node after warm-up, at its peak and at the end,
the node's own counters (processed, dropped, rejected), and output checks (every depth/camera_info published
has finite fx, fy > 0; every depth is 32FC1 of the size its data says).

    .venv/bin/python bench/fuzz_node.py --messages 10000 --json /tmp/fuzz.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_process import (  # noqa: E402
    NodeProcess,
    count_log_lines,
    last_totals,
    machine,
    private_graph,
    small_models,
)

WIDTH, HEIGHT = 120, 80  # valid frames (not the network's 96x64)
K = (100.0, 110.0, 61.5, 38.0)
PROBE_SEC = 2_000_000_000  # probe stamps: sec = PROBE_SEC + i, disjoint from every fuzzed stamp
U32 = 2**32 - 1


def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:320:4, 16:496:4])


def camera_info(width: int = WIDTH, height: int = HEIGHT):
    from sensor_msgs.msg import CameraInfo

    fx, fy, cx, cy = K
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class Kinds:
    """Message factories by kind: ``raw`` (Image), ``compressed`` (CompressedImage), ``info`` (CameraInfo)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rgb = photo()
        self.jpeg = cv2.imencode(".jpg", self.rgb[..., ::-1])[1].tobytes()
        self.png = cv2.imencode(".png", self.rgb[..., ::-1])[1].tobytes()
        self.stamp = 1_000_000_000  # fuzzed stamps count down from here: backwards
        self.raw = {
            "valid": self.valid_raw,
            "unknown encoding": lambda: self.image(
                encoding=self.pick(["", "foo", "RGB8", "x" * 300, "rgb8 "])
            ),
            "unsupported encoding": self.unsupported,
            "step < row": lambda: self.image(step=WIDTH * 3 - int(self.rng.integers(1, 200))),
            "data shorter": lambda: self.image(data=self.rgb.tobytes()[: int(self.rng.integers(0, 28799))]),
            "data longer": lambda: self.image(
                data=self.rgb.tobytes() + bytes(int(self.rng.integers(1, 500)))
            ),
            "width/height swapped": lambda: self.image(width=HEIGHT, height=WIDTH),
            "step > row, data unpadded": lambda: self.image(step=WIDTH * 3 + 4),
            "gigabyte size, few bytes": self.gigabyte,
            "zero size": lambda: self.image(
                **self.pick([{"width": 0}, {"height": 0}, {"width": 0, "height": 0, "step": 0, "data": b""}])
            ),
            "is_bigendian flipped": lambda: self.image(is_bigendian=int(self.rng.integers(1, 256))),
            "empty frame_id": lambda: self.image(frame_id=""),
            "odd stamps": self.odd_stamp,
            "degenerate size": self.degenerate,
            "all random": self.random_image,
        }
        self.compressed = {
            "valid": lambda: self.comp(self.pick([self.jpeg, self.png]), self.pick(["jpeg", "png"])),
            "truncated jpeg": lambda: self.comp(self.cut(self.jpeg), "jpeg"),
            "truncated jpeg + EOI": lambda: self.comp(self.cut(self.jpeg) + b"\xff\xd9", "jpeg"),
            "corrupt jpeg": lambda: self.comp(self.corrupt(self.jpeg), "jpeg"),
            "truncated png": lambda: self.comp(self.cut(self.png), "png"),
            "corrupt png": lambda: self.comp(self.corrupt(self.png), "png"),
            "empty data": lambda: self.comp(b"", self.pick(["jpeg", "png", ""])),
            "random bytes": lambda: self.comp(self.noise(int(self.rng.integers(1, 5000))), "jpeg"),
            "header claims 65535x65535": self.huge_header,
            "format disagrees": lambda: self.comp(
                self.pick([self.jpeg, self.png]), self.pick(["png", "jpeg", "", "bgr8; tiff", "x" * 200])
            ),
            "other file type": self.other_type,
            "unusual valid png": self.unusual_png,
            "odd header": lambda: self.comp(self.jpeg, "jpeg", frame_id="", **self.pick_stamp()),
        }
        self.info = {
            "valid camera_info": camera_info,
            "zero focal length": lambda: self.bad_k(0, 0.0),
            "negative focal length": lambda: self.bad_k(self.pick([0, 4]), -100.0),
            "NaN focal length": lambda: self.bad_k(self.pick([0, 4]), math.nan),
            "inf focal length": lambda: self.bad_k(self.pick([0, 4]), self.pick([math.inf, -math.inf])),
            "NaN principal point": lambda: self.bad_k(self.pick([2, 5]), math.nan),
            "K and P all zero": lambda: self.bad_matrices(k=[0.0] * 9, p=[0.0] * 12),
            "NaN in P": lambda: self.bad_matrices(p=[math.nan] * 12),
            "broken K beside a valid P": lambda: self.bad_matrices(
                k=self.pick([[0.0] * 9, [math.nan] * 9, [-100.0, 0.0, 40.0, 0.0, 100.0, 20.0, 0.0, 0.0, 1.0]])
            ),
            "other size": lambda: camera_info(*self.pick([(WIDTH, WIDTH), (1, 1), (U32, U32), (640, 80)])),
            "long D, unknown model": self.odd_distortion,
        }

    # ------------------------------------------------------------------------------------------- helpers
    def pick(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def noise(self, n: int) -> bytes:
        return self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def cut(self, data: bytes) -> bytes:
        return data[: int(self.rng.integers(1, len(data) - 1))]

    def corrupt(self, data: bytes) -> bytes:
        start = int(self.rng.integers(2, len(data) - 64))
        length = int(self.rng.integers(1, 64))
        return data[:start] + self.noise(length) + data[start + length :]

    def pick_stamp(self) -> dict:
        self.stamp -= 1
        sec, nanosec = self.pick(
            [
                (0, 0),
                (self.stamp, 0),
                (-int(self.rng.integers(1, 2**31)), 5),
                (self.stamp, U32),
                (2**31 - 1, 0),
            ]
        )
        return {"sec": sec, "nanosec": nanosec}

    def image(self, frame_id: str = "camera", sec: int | None = None, nanosec: int = 0, **fields):
        from sensor_msgs.msg import Image

        values = dict(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=self.rgb.tobytes())
        values.update(fields)
        return self._header(Image(**values), frame_id, sec, nanosec)

    def comp(self, data: bytes, fmt: str, frame_id: str = "camera", sec: int | None = None, nanosec: int = 0):
        from sensor_msgs.msg import CompressedImage

        return self._header(CompressedImage(format=fmt, data=data), frame_id, sec, nanosec)

    def _header(self, msg, frame_id: str, sec: int | None, nanosec: int):
        """``msg`` with its header set; without ``sec`` the next stamp of the backwards count."""
        msg.header.frame_id = frame_id
        if sec is None:
            self.stamp -= 1
            sec = self.stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        return msg

    # --------------------------------------------------------------------------------------- raw kinds
    def valid_raw(self):
        return self.image()

    def unsupported(self):
        encoding, size = self.pick(
            [("yuv422", 2), ("yuv422_yuy2", 2), ("bayer_rggb8", 1), ("bayer_bggr16", 2), ("bayer_gbrg8", 1),
             ("16UC1", 2), ("32FC1", 4), ("32FC3", 12), ("8UC3", 3), ("mono16", 2), ("rgb16", 6),
             ("rgba16", 8), ("nv21", 1), ("64FC1", 8), ("8SC4", 4)]
        )  # fmt: skip
        return self.image(encoding=encoding, step=WIDTH * size, data=self.noise(WIDTH * size * HEIGHT))

    def gigabyte(self):
        width, height, step = self.pick(
            [(U32, U32, U32), (100_000, 100_000, 300_000), (U32, 1, U32), (1, 15_000_000, 3),
             (4000, 4000, 12_000), (1, 1, U32)]
        )  # fmt: skip
        return self.image(
            width=width, height=height, step=step, data=self.noise(int(self.rng.integers(0, 64)))
        )

    def odd_stamp(self):
        return self.image(**self.pick_stamp())

    def degenerate(self):
        width, height = self.pick([(1, 1), (1, 500), (500, 1), (2, 3), (3000, 2)])
        encoding, channels = self.pick([("rgb8", 3), ("mono8", 1), ("bgra8", 4)])
        return self.image(
            width=width, height=height, encoding=encoding, step=width * channels,
            data=self.noise(width * channels * height),
        )  # fmt: skip

    def random_image(self):
        return self.image(
            width=int(self.rng.integers(0, 3000)),
            height=int(self.rng.integers(0, 3000)),
            encoding=self.pick(["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "yuv422", "?"]),
            step=int(self.rng.integers(0, 10_000)),
            is_bigendian=int(self.rng.integers(0, 256)),
            data=self.noise(int(self.rng.integers(0, 30_000))),
        )

    # -------------------------------------------------------------------------------- compressed kinds
    def huge_header(self):
        if self.rng.integers(2):
            png = bytearray(self.png)
            png[16:24] = (65535).to_bytes(4, "big") * 2
            return self.comp(bytes(png[: int(self.rng.integers(24, 200))]), "png")
        # SOI, SOF0 declaring 65535x65535, 3 components, then EOI
        sof = b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03" + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
        return self.comp(b"\xff\xd8" + sof + b"\xff\xd9", "jpeg")

    def other_type(self):
        small = self.rgb[:8, :8, ::-1]
        ext = self.pick([".bmp", ".tiff", ".ppm"])
        ok, data = cv2.imencode(ext, small)
        data = data.tobytes() if ok else self.noise(64)
        return self.comp(self.pick([data, b"GIF89a" + self.noise(100)]), self.pick(["jpeg", "png", ext[1:]]))

    def unusual_png(self):
        kind = self.pick(["16-bit", "grey", "rgba", "1x1"])
        if kind == "16-bit":
            image = self.rgb[..., ::-1].astype(np.uint16) * 257
        elif kind == "grey":
            image = self.rgb[..., 0]
        elif kind == "rgba":
            image = np.dstack([self.rgb[..., ::-1], np.full(self.rgb.shape[:2], 128, np.uint8)])
        else:
            image = self.rgb[:1, :1, ::-1]
        return self.comp(cv2.imencode(".png", np.ascontiguousarray(image))[1].tobytes(), "png")

    # ---------------------------------------------------------------------------------- camera_info kinds
    def bad_k(self, index: int, value: float):
        info = camera_info()
        info.k[index] = value
        info.p = [0.0] * 12  # K is used
        return info

    def bad_matrices(self, k=None, p=None):
        info = camera_info()
        if k is not None:
            info.k = k
        if p is not None:
            info.p = p
        return info

    def odd_distortion(self):
        info = camera_info()
        info.distortion_model = self.pick(["", "fisheye", "x" * 500, "rational_polynomial"])
        info.d = self.rng.normal(size=int(self.rng.integers(0, 1000))).tolist()
        return info


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--messages", type=int, default=10_000, help="malformed/interleaved messages to send")
    parser.add_argument("--burst", type=int, default=50, help="messages per burst (then a probe per node)")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="pause between messages of a burst")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--probe-timeout", type=float, default=30.0, help="seconds a probe's depth is awaited"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--logs", type=Path, help="keep the node logs in this folder (default: temporary)")
    args = parser.parse_args(argv)
    private_graph()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    rng = np.random.default_rng(args.seed)
    kinds = Kinds(rng)
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        ((_, model),) = small_models(Path(tmp))
        nodes: dict[str, NodeProcess] = {}
        node_params = {
            "model_path": model,
            "backend": "onnxruntime",
            "scale_source": "fixed",
            "stats_period": 5.0,
        }
        for name, compressed in (("raw", False), ("compressed", True)):
            image_topic = f"/fuzz_{name}/image" + ("/compressed" if compressed else "")
            qos = {
                f"qos_overrides.{image_topic}.subscription.reliability": "reliable",
                f"qos_overrides.{image_topic}.subscription.depth": 100,
                f"qos_overrides./fuzz_{name}/camera_info.subscription.reliability": "reliable",
                f"qos_overrides./fuzz_{name}/camera_info.subscription.depth": 100,
            }
            for log in (logs / f"{name}.log",):
                log.unlink(missing_ok=True)
            nodes[name] = NodeProcess(
                f"/fuzz_{name}", {**node_params, "compressed": compressed, **qos}, logs / f"{name}.log"
            )

        rclpy.init()
        client = rclpy.create_node("fuzz_publisher")
        executor = SingleThreadedExecutor()
        executor.add_node(client)
        threading.Thread(target=executor.spin, daemon=True).start()
        qos = QoSProfile(depth=1000)  # reliable
        pubs = {
            "raw": client.create_publisher(Image, "/fuzz_raw/image", qos),
            "compressed": client.create_publisher(CompressedImage, "/fuzz_compressed/image/compressed", qos),
        }
        info_pubs = {
            name: client.create_publisher(CameraInfo, f"/fuzz_{name}/camera_info", qos) for name in nodes
        }
        answered: dict[str, set[int]] = {name: set() for name in nodes}
        bad_info = Counter()
        depth_problems = Counter()
        lock = threading.Condition()

        def on_depth(name: str, msg: Image) -> None:
            if msg.encoding != "32FC1" or len(msg.data) != msg.height * msg.step or msg.step < 4 * msg.width:
                depth_problems[name] += 1
            with lock:
                answered[name].add(msg.header.stamp.sec)
                lock.notify_all()

        def on_info(name: str, msg: CameraInfo) -> None:
            fx, fy = msg.k[0], msg.k[4]
            if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
                bad_info[name] += 1

        for name in nodes:
            client.create_subscription(Image, f"/fuzz_{name}/depth", lambda m, n=name: on_depth(n, m), 100)
            client.create_subscription(
                CameraInfo, f"/fuzz_{name}/depth/camera_info", lambda m, n=name: on_info(n, m), 100
            )

        probes = iter(range(PROBE_SEC, PROBE_SEC + 10_000_000))
        crashes: list[dict] = []

        def probe(name: str, timeout: float) -> tuple[bool, float]:
            """A valid frame with a fresh stamp; True once its depth arrived (re-sent every 2 s)."""
            stamp = next(probes)
            if name == "raw":
                msg = kinds.image(sec=stamp)
            else:
                msg = kinds.comp(kinds.jpeg, "jpeg", sec=stamp)
            start = time.monotonic()
            deadline = start + timeout
            while time.monotonic() < deadline:
                pubs[name].publish(msg)
                with lock:
                    if lock.wait_for(lambda: stamp in answered[name], timeout=2.0):
                        return True, time.monotonic() - start
                if not nodes[name].alive():
                    break
            return False, time.monotonic() - start

        # warm-up: discovery and the first inference
        for name in nodes:
            info_pubs[name].publish(camera_info())
            ok, _ = probe(name, 120.0)
            if not ok:
                print(f"node {name} did not answer its warm-up frame; log:\n{nodes[name].tail()}")
                return 2
        time.sleep(1.0)
        rss_start = {name: node.rss_kib() for name, node in nodes.items()}
        rss_peak = dict(rss_start)
        lines_start = {name: count_log_lines(node.log) for name, node in nodes.items()}
        start = time.monotonic()

        sent = Counter()
        probes_sent = Counter()
        probes_answered = Counter()
        probe_seconds: list[float] = []
        table_kinds = (
            [("raw", k) for k in kinds.raw]
            + [("compressed", k) for k in kinds.compressed]
            + [("info", k) for k in kinds.info]
        )
        total = 0
        while total < args.messages:
            for _ in range(min(args.burst, args.messages - total)):
                group, kind = table_kinds[int(rng.integers(len(table_kinds)))]
                if group == "info":
                    msg = kinds.info[kind]()
                    for name in nodes:
                        info_pubs[name].publish(msg)
                else:
                    pubs[group].publish((kinds.raw if group == "raw" else kinds.compressed)[kind]())
                sent[(group, kind)] += 1
                total += 1
                time.sleep(args.gap_ms / 1e3)
            for name, node in nodes.items():
                if not node.alive():
                    continue
                probes_sent[name] += 1
                ok, seconds = probe(name, args.probe_timeout)
                probes_answered[name] += ok
                probe_seconds.append(seconds)
                if not node.alive():
                    crashes.append({"node": name, "after_messages": total, "code": node.process.returncode})
                    print(f"node {name} exited with code {node.process.returncode}; log:\n{node.tail()}")
                rss = node.rss_kib()
                if rss is not None:
                    rss_peak[name] = max(rss_peak[name], rss)
            if total % 1000 < args.burst:
                print(
                    f"{total} messages, probes answered {dict(probes_answered)} of {dict(probes_sent)}, "
                    f"RSS {{{', '.join(f'{n}: {nodes[n].rss_kib()}' for n in nodes)}}} KiB",
                    flush=True,
                )
        duration = time.monotonic() - start
        rss_end = {name: node.rss_kib() for name, node in nodes.items()}
        time.sleep(6.0)  # one more statistics line with the totals
        totals = {name: last_totals(node.log) for name, node in nodes.items()}
        alive_at_end = {name: node.alive() for name, node in nodes.items()}
        exit_codes = {name: node.stop() for name, node in nodes.items()}
        lines_end = {name: count_log_lines(node.log) for name, node in nodes.items()}
        executor.shutdown()
        client.destroy_node()
        rclpy.shutdown()

    lines = {
        name: {level: lines_end[name][level] - lines_start[name][level] for level in lines_end[name]}
        for name in nodes
    }
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "messages": total,
        "duration_s": round(duration, 1),
        "sent": {f"{group}: {kind}": n for (group, kind), n in sorted(sent.items())},
        "crashes": sum(not alive for alive in alive_at_end.values()),
        "crash_details": crashes,
        "exit_codes_after_sigint": exit_codes,
        "probes_sent": dict(probes_sent),
        "probes_answered": dict(probes_answered),
        "probe_seconds_max": round(max(probe_seconds), 3) if probe_seconds else None,
        "log_lines": lines,
        "log_lines_per_s": {
            name: {level: round(n / duration, 3) for level, n in counts.items()}
            for name, counts in lines.items()
        },
        "rss_kib": {"start": rss_start, "peak": rss_peak, "end": rss_end},
        "node_totals": totals,
        "bad_depth_camera_info": dict(bad_info),
        "bad_depth_images": dict(depth_problems),
    }
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        result["crashes"] == 0
        and result["probes_answered"] == result["probes_sent"]
        and not bad_info
        and not depth_problems
        and all(code == 0 for code in exit_codes.values())
    )
    return 0 if ok else 1


def print_table(r: dict) -> None:
    print(f"\n# fuzz_node: {r['messages']} messages in {r['duration_s']} s, {r['date']}, {r['machine']}")
    print("| node / kind | messages sent |\n|---|---:|")
    for kind, n in r["sent"].items():
        print(f"| {kind} | {n} |")
    print("\n| figure | raw node | compressed node |\n|---|---:|---:|")
    row = lambda label, values: print(f"| {label} | {values['raw']} | {values['compressed']} |")  # noqa: E731
    row(
        "probes answered / sent",
        {n: f"{r['probes_answered'].get(n, 0)}/{r['probes_sent'].get(n, 0)}" for n in r["probes_sent"]},
    )
    row("exit code after SIGINT (0 = clean)", r["exit_codes_after_sigint"])
    for level in ("WARN", "ERROR", "INFO", "other"):
        row(
            f"log lines {level} (per s)",
            {
                n: f"{r['log_lines'][n][level]} ({r['log_lines_per_s'][n][level]:.2f}/s)"
                for n in r["log_lines"]
            },
        )
    for when in ("start", "peak", "end"):
        row(f"VmRSS {when} (MiB)", {n: f"{(v or 0) / 1024:.1f}" for n, v in r["rss_kib"][when].items()})
    row("node totals (processed/dropped/rejected)", {
        n: "/".join(str(t[k]) for k in ("processed", "dropped", "rejected")) if t else "n/a"
        for n, t in r["node_totals"].items()
    })  # fmt: skip
    print(
        f"\nnode crashes: {r['crashes']}; depth/camera_info with unusable K: "
        f"{r['bad_depth_camera_info'] or 0}; malformed depth images: {r['bad_depth_images'] or 0}; "
        f"slowest probe {r['probe_seconds_max']} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
