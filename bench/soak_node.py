"""A long run of the depth node: frames at ``--rate`` Hz for ``--minutes``, parameters changed mid-stream.

The node runs as a separate process (bench/node_process.py) on two small random networks, A and B (seeds 0
and 1, each as an ONNX file and as its PyTorch checkpoint). This process publishes 120x80 rgb8 frames (four
different pictures in turn, each with a fresh stamp) and their CameraInfo at ``--rate`` Hz, and every
``--switch-every`` seconds changes the node's parameters through a real parameter client (rclpy's
AsyncParameterClient: the SetParametersAtomically service, what ``ros2 param set`` calls), cycling through:

    model_path B.onnx | range_max | point_stride | output_resolution network | model_path A.pt + backend torch
    | model_path B.pt + range_max 0 + point_stride 1 | output_resolution input
    | model_path A.onnx + backend onnxruntime + point_stride 2 (the start again)

Every frame the node publishes carries its tag on ``depth/model`` (std_msgs/String, JSON, the frame's stamp:
the model file, its sha256, the backend, the estimator's generation, the settings and frame options that made
it). Each received frame is checked:

- consistent: its depth equals (rtol 1e-4) the bare DepthEstimator's depth of the tagged model file on the
  tagged backend at the tagged output_resolution, masked by the tagged range_max, and no other model's; its
  cloud is that depth at the tagged point_stride; the tag's sha256 is the file's. A frame made by a
  half-switched estimator (one model's depth under another's name, new options on an old model, a cloud of
  another stride) fails this;
- in its window: the tagged configuration is one that was active while the frame was in flight: not one
  replaced before the frame was published (its change acknowledged), nor one requested after the frame's
  depth arrived;
- generations never go backwards.

Recorded: frames published and answered, switches per kind, inconsistent / out-of-window / untagged frames
(all must be 0), node crashes (must be 0), VmRSS of the node process sampled every 5 s (after warm-up, after
the first full cycle of switches, at the end) and latency (publish -> depth received) p50/p99 over the first
and the last minute.

    .venv/bin/python bench/soak_node.py --minutes 10 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_process import NodeProcess, count_log_lines, machine, private_graph, small_models  # noqa: E402

WIDTH, HEIGHT = 120, 80
K = (100.0, 110.0, 61.5, 38.0)
PICTURES = 4
NAMESPACE = "/soak"


def pictures() -> list[np.ndarray]:
    from skimage import data

    base = np.ascontiguousarray(data.astronaut()[0:320:4, 16:496:4])
    return [np.ascontiguousarray(np.roll(base, 29 * i, axis=1)) for i in range(PICTURES)]


def switch_cycle(models: dict[str, Path], range_max: float) -> list[tuple[str, dict]]:
    """(kind, parameter changes) in the order applied; the last one restores the start."""
    return [
        ("model_path", {"model_path": str(models["B.onnx"])}),
        ("range_max", {"range_max": range_max}),
        ("point_stride", {"point_stride": 3}),
        ("output_resolution", {"output_resolution": "network"}),
        ("backend + model_path", {"model_path": str(models["A.pt"]), "backend": "torch"}),
        (
            "model_path + range_max + point_stride",
            {"model_path": str(models["B.pt"]), "range_max": 0.0, "point_stride": 1},
        ),
        ("output_resolution", {"output_resolution": "input"}),
        (
            "backend + model_path + point_stride",
            {"model_path": str(models["A.onnx"]), "backend": "onnxruntime", "point_stride": 2},
        ),
    ]


def config_key(values: dict) -> tuple:
    return (
        values["model_path"],
        values["backend"],
        values["output_resolution"],
        float(values["range_max"]),
        int(values["point_stride"]),
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=20.0, help="frames per second published")
    parser.add_argument("--switch-every", type=float, default=15.0, help="seconds between parameter changes")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--log", type=Path, help="keep the node's log here (default: temporary)")
    args = parser.parse_args(argv)
    private_graph()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from ssim_depth.codecs import image_msg_to_depth, parse_model_info, pointcloud2_msg_to_cloud
    from std_msgs.msg import String

    from ssim_depth_core.runtime import DepthEstimator

    frames = pictures()
    with tempfile.TemporaryDirectory() as tmp:
        (a_pt, a_onnx), (b_pt, b_onnx) = small_models(Path(tmp), seeds=(0, 1))
        models = {"A.onnx": a_onnx, "B.onnx": b_onnx, "A.pt": a_pt, "B.pt": b_pt}
        digests = {str(path): sha256(path) for path in models.values()}
        network = {str(path): name[0] for name, path in models.items()}  # "A" or "B": .onnx and .pt alike
        suffix_backend = {".onnx": "onnxruntime", ".pt": "torch"}
        # the reference: each model file on its backend, at both output resolutions, per picture
        expected: dict[tuple[str, str], list[np.ndarray]] = {}
        for path in models.values():
            backend = "torch" if path.suffix == ".pt" else "onnxruntime"
            estimator = DepthEstimator(path, backend=backend, device="cpu")
            at_network = DepthEstimator(estimator.backend, output_size=estimator.input_size)
            expected[(str(path), "input")] = [estimator(f) for f in frames]
            expected[(str(path), "network")] = [at_network(f) for f in frames]
        separation = float(
            np.abs(expected[(str(a_onnx), "input")][0] / expected[(str(b_onnx), "input")][0] - 1).max()
        )
        range_max = float(np.median(expected[(str(a_onnx), "input")][0]))
        cycle = switch_cycle(models, range_max)

        start_values = {
            "model_path": str(a_onnx), "backend": "onnxruntime", "output_resolution": "input",
            "range_max": 0.0, "point_stride": 2,
        }  # fmt: skip
        log = args.log or Path(tmp) / "node.log"
        log.unlink(missing_ok=True)
        node = NodeProcess(
            NAMESPACE,
            {**start_values, "scale_source": "fixed", "stats_period": 10.0, "publish_preview": True},
            log,
        )

        rclpy.init()
        client = rclpy.create_node("soak_client", namespace=NAMESPACE)
        executor = SingleThreadedExecutor()
        executor.add_node(client)
        threading.Thread(target=executor.spin, daemon=True).start()
        image_pub = client.create_publisher(Image, "image", 10)
        info_pub = client.create_publisher(CameraInfo, "camera_info", 10)
        params = AsyncParameterClient(client, "depth_node")

        lock = threading.Lock()
        published: dict[int, float] = {}  # stamp sec -> publish time
        depths: dict[int, tuple[Image, float]] = {}
        clouds: dict[int, PointCloud2] = {}
        tags: dict[int, dict] = {}
        tag_order: list[int] = []  # generations in arrival order

        def on_depth(msg: Image) -> None:
            with lock:
                depths[msg.header.stamp.sec] = (msg, time.monotonic())

        def on_points(msg: PointCloud2) -> None:
            with lock:
                clouds[msg.header.stamp.sec] = msg

        def on_tag(msg: String) -> None:
            info = parse_model_info(msg)
            with lock:
                tags[info["stamp"]["sec"]] = info
                tag_order.append(info["model"]["generation"])

        client.create_subscription(Image, "depth", on_depth, 50)
        client.create_subscription(PointCloud2, "points", on_points, 50)
        client.create_subscription(
            String, "depth/model", on_tag, QoSProfile(depth=50, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        )

        info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob", d=[0.0] * 5)
        fx, fy, cx, cy = K
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        stamps = iter(range(1, 10**9))

        def frame_msg(sec: int) -> Image:
            pixels = frames[sec % PICTURES]
            msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=pixels.tobytes())
            msg.header.frame_id = info.header.frame_id = "camera"
            msg.header.stamp.sec = info.header.stamp.sec = sec
            return msg

        # warm-up: discovery, parameter services, the first inference
        deadline = time.monotonic() + 180
        while True:
            sec = next(stamps)
            info_pub.publish(info)
            image_pub.publish(frame_msg(sec))
            time.sleep(0.5)
            with lock:
                if sec in depths and sec in tags:
                    break
            if time.monotonic() > deadline or not node.alive():
                print(f"the node did not answer within 180 s; log:\n{node.tail()}")
                return 2
        if not params.wait_for_services(timeout_sec=60):
            print("the node's parameter services did not appear")
            return 2
        with lock:
            depths.clear(), clouds.clear(), tags.clear(), tag_order.clear()

        # configs[k] = (key, requested, acknowledged); config 0 is the start
        configs: list[dict] = [
            {"key": config_key(start_values), "kind": "start", "req": -math.inf, "ack": -math.inf}
        ]
        current = dict(start_values)
        results = Counter()
        verdict = Counter()
        problems: list[str] = []
        latencies: list[tuple[float, float]] = []  # (publish time, ms)
        rss: list[tuple[float, int]] = []
        regressions = 0
        seen_generation = 0
        examined_tags = 0

        def examine(sec: int, final: bool = False) -> bool:
            """Check frame ``sec`` once its depth, tag (and cloud) are in; True when it is done with."""
            nonlocal regressions
            with lock:
                depth_entry, tag, cloud = depths.get(sec), tags.get(sec), clouds.get(sec)
            t_pub = published[sec]
            if depth_entry is None:
                if final or time.monotonic() - t_pub > 10:
                    verdict["unanswered"] += 1
                    return True
                return False
            depth_msg, t_recv = depth_entry
            if tag is None or cloud is None:
                if not (final or time.monotonic() - t_recv > 5):
                    return False
                if tag is None:
                    verdict["untagged"] += 1
                    problems.append(f"frame {sec}: depth without a depth/model tag")
                    return True
            latencies.append((t_pub, (t_recv - t_pub) * 1e3))
            verdict["answered"] += 1
            model, settings, options = tag["model"], tag["settings"], tag["options"]
            values = {
                "model_path": model["model_path"], "backend": model["backend"],
                "output_resolution": settings["output_resolution"], "range_max": options["range_max"],
                "point_stride": options["point_stride"],
            }  # fmt: skip
            key = config_key(values)
            # consistency: the depth is the tagged model's, with the tagged options
            depth = image_msg_to_depth(depth_msg)
            reference = expected.get((values["model_path"], values["output_resolution"]))
            why = None
            if model["model_sha256"] != digests.get(values["model_path"]):
                why = "sha256 is not the tagged file's"
            elif reference is None:
                why = f"unknown model {values['model_path']}"
            else:
                exp = reference[sec % PICTURES]
                rmax, rmin = float(options["range_max"]), float(options["range_min"])
                masked = exp.copy()
                if rmax:
                    masked[exp >= rmax] = np.nan
                if rmin:
                    masked[exp <= rmin] = np.nan
                near = (np.abs(exp - rmax) < 1e-4 * max(rmax, 1e-6)) if rmax else np.zeros(exp.shape, bool)
                matches = set()
                for (path, resolution), depths_of in expected.items():
                    other = depths_of[sec % PICTURES]
                    if resolution != values["output_resolution"] or other.shape != depth.shape:
                        continue
                    finite = np.isfinite(depth) & ~near
                    if finite.any() and np.allclose(depth[finite], other[finite], rtol=1e-4, atol=1e-6):
                        matches.add(network[path])
                if depth.shape != exp.shape:
                    why = f"depth {depth.shape} is not {values['output_resolution']} resolution {exp.shape}"
                elif not np.array_equal(np.isnan(depth)[~near], np.isnan(masked)[~near]):
                    why = f"NaN pixels are not range_max {rmax}'s"
                elif matches != {network[values["model_path"]]}:
                    why = f"depth is network {sorted(matches)}'s, tagged {values['model_path']}"
                elif suffix_backend[Path(values["model_path"]).suffix] != values["backend"]:
                    why = f"backend {values['backend']} cannot have served {values['model_path']}"
                elif cloud is not None:
                    stride = int(options["point_stride"])
                    z = pointcloud2_msg_to_cloud(cloud).points["z"]
                    if z.shape != depth[::stride, ::stride].shape:
                        why = f"cloud {z.shape} is not the depth at stride {stride}"
                    elif not np.allclose(z, depth[::stride, ::stride], rtol=1e-6, equal_nan=True):
                        why = "cloud z is not the depth"
            if why:
                verdict["inconsistent"] += 1
                problems.append(f"frame {sec}: {why}")
            # the window: configurations active between publishing and receiving the frame
            low = max(k for k, c in enumerate(configs) if c["ack"] is not None and c["ack"] < t_pub)
            high = max(k for k, c in enumerate(configs) if c["req"] < t_recv)
            if not any(configs[k]["key"] == key for k in range(low, high + 1)):
                verdict["out of window"] += 1
                problems.append(
                    f"frame {sec}: tagged {key}, active {[configs[k]['key'] for k in range(low, high + 1)]}"
                )
            with lock:
                depths.pop(sec, None), clouds.pop(sec, None), tags.pop(sec, None)
            return True

        pending: list[int] = []
        start = time.monotonic()
        end = start + args.minutes * 60
        next_switch = start + args.switch_every
        next_rss = start
        switch_index = 0
        period = 1.0 / args.rate
        tick = start
        last_report = start
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_rss:
                value = node.rss_kib()
                if value is not None:
                    rss.append((now - start, value))
                next_rss += 5.0
            if now >= next_switch:
                kind, changes = cycle[switch_index % len(cycle)]
                switch_index += 1
                current.update(changes)
                config = {"key": config_key(current), "kind": kind, "req": time.monotonic(), "ack": None}
                configs.append(config)
                future = params.set_parameters_atomically([Parameter(n, value=v) for n, v in changes.items()])

                def done(f, config=config, kind=kind) -> None:
                    config["ack"] = time.monotonic()
                    ok = f.result().result.successful
                    results[(kind, ok)] += 1
                    if not ok:
                        problems.append(f"switch {kind} refused: {f.result().result.reason}")

                future.add_done_callback(done)
                next_switch += args.switch_every
            sec = next(stamps)
            msg = frame_msg(sec)
            info_pub.publish(info)
            published[sec] = time.monotonic()
            image_pub.publish(msg)
            pending.append(sec)
            pending = [s for s in pending if not examine(s)]
            if not node.alive():
                break
            with lock:
                for generation in tag_order[examined_tags:]:
                    if generation < seen_generation:
                        regressions += 1
                    seen_generation = max(seen_generation, generation)
                examined_tags = len(tag_order)
            if now - last_report > 60:
                last_report = now
                print(
                    f"{(now - start) / 60:.1f} min: {len(published)} published, {dict(verdict)}, "
                    f"{switch_index} switches, RSS {rss[-1][1] / 1024 if rss else 0:.1f} MiB",
                    flush=True,
                )
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))
        duration = time.monotonic() - start
        time.sleep(3.0)
        for sec in pending:
            examine(sec, final=True)
        alive = node.alive()
        rss_end = node.rss_kib()
        exit_code = node.stop()
        lines = count_log_lines(log)
        log_tail = node.tail(2000)
        executor.shutdown()
        client.destroy_node()
        rclpy.shutdown()

    window = min(60.0, duration / 3)
    first = [ms for t, ms in latencies if t - start < window]
    last = [ms for t, ms in latencies if t - start > duration - window]
    cycle_seconds = len(cycle) * args.switch_every
    after_cycle = next((v for t, v in rss if t >= cycle_seconds + 5), None)
    switches = Counter(kind for kind, ok in results.elements() if ok)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "minutes": round(duration / 60, 2),
        "rate_hz": args.rate,
        "published": len(published),
        "verdict": dict(verdict),
        "switches_applied": dict(switches),
        "switches_refused": sum(n for (kind, ok), n in results.items() if not ok),
        "switches_requested": switch_index,
        "model_separation": round(separation, 3),
        "generation_regressions": regressions,
        "crashes": int(not alive),
        "exit_code_after_sigint": exit_code,
        "rss_mib": {
            "after_warmup": round(rss[0][1] / 1024, 1) if rss else None,
            "after_first_cycle": round(after_cycle / 1024, 1) if after_cycle else None,
            "max": round(max(v for _, v in rss) / 1024, 1) if rss else None,
            "end": round(rss_end / 1024, 1) if rss_end else None,
            "samples": [(round(t), v) for t, v in rss],
        },
        "latency_ms": {
            "window_s": round(window),
            "first": {"count": len(first), "p50": percentile(first, 50), "p99": percentile(first, 99)},
            "last": {"count": len(last), "p50": percentile(last, 50), "p99": percentile(last, 99)},
        },
        "log_lines": lines,
        "problems": problems[:20],
    }
    print_table(result)
    if not alive:
        print(f"the node died; log tail:\n{log_tail}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        alive
        and exit_code == 0
        and not verdict["inconsistent"]
        and not verdict["out of window"]
        and not verdict["untagged"]
        and not regressions
        and not result["switches_refused"]
    )
    return 0 if ok else 1


def print_table(r: dict) -> None:
    v = r["verdict"]
    print(f"\n# soak_node: {r['minutes']} min at {r['rate_hz']} Hz, {r['date']}, {r['machine']}")
    print("| figure | value |\n|---|---:|")
    rows = [
        ("frames published", r["published"]),
        ("frames answered (depth + tag checked)", v.get("answered", 0)),
        ("frames unanswered (dropped by the node: newest frame first)", v.get("unanswered", 0)),
        ("inconsistent frames (depth/cloud not the tagged model's)", v.get("inconsistent", 0)),
        ("frames tagged with a configuration not active in flight", v.get("out of window", 0)),
        ("depth frames without a tag", v.get("untagged", 0)),
        ("generation regressions", r["generation_regressions"]),
        ("parameter changes applied / requested",
         f"{sum(r['switches_applied'].values())}/{r['switches_requested']}"),
        ("node crashes", r["crashes"]),
        ("exit code after SIGINT", r["exit_code_after_sigint"]),
        ("VmRSS after warm-up / first cycle / max / end (MiB)",
         " / ".join(str(r["rss_mib"][k]) for k in ("after_warmup", "after_first_cycle", "max", "end"))),
        (f"latency first {r['latency_ms']['window_s']} s p50 / p99 (ms)",
         f"{r['latency_ms']['first']['p50']} / {r['latency_ms']['first']['p99']}"),
        (f"latency last {r['latency_ms']['window_s']} s p50 / p99 (ms)",
         f"{r['latency_ms']['last']['p50']} / {r['latency_ms']['last']['p99']}"),
        ("node log lines WARN / ERROR", f"{r['log_lines']['WARN']} / {r['log_lines']['ERROR']}"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"| {label} | {value} |")
    print("\nswitches applied per kind: " + ", ".join(f"{k} {n}" for k, n in r["switches_applied"].items()))
    for problem in r["problems"]:
        print("problem:", problem)


if __name__ == "__main__":
    raise SystemExit(main())
