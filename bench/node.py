"""ROS node overhead: image publish -> depth receive through ``depth_node`` vs the bare DepthEstimator call.

Peers, measured in one process on the same model and the same KITTI-size (1242x375 rgb8) frame, alternating
frame by frame so that both see the same machine load:

- bare: ``DepthEstimator(frame)`` on the RGB array (same model file and backend as the node's);
- node: a client publishes the frame as sensor_msgs/Image (+ CameraInfo) and waits until the node's output
  for that stamp arrives: DDS transport both ways, message decoding, inference, depth encoding, publishing.
  Measured twice: depth only (points and preview off; the adapter's cost) and with every output (depth,
  depth/camera_info, points at stride 2, preview), waiting for all of them.

The ratio is bare time / node time = node rate / estimator rate (goal >= 0.85 for depth only). Closed loop
(one frame in flight), so it measures per-frame cost. Then open loop, as a camera drives the node: frames
published at ``--stream-rate`` for ``--stream-seconds`` with depth and points on; the frames answered on each
output (the node drops stale frames when it falls behind) give its output rate.

    .venv/bin/python bench/node.py                          # random-init ResNet-18 at 640x192, onnxruntime
    .venv/bin/python bench/node.py --model depth.onnx --backend tensorrt --repeats 100
    .venv/bin/python bench/node.py --net mobilenet_v3_large+light --threads 1 --frame-size 640x192
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import onnxruntime as ort
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "ssim_depth"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import model_name, parse_model, random_checkpoint  # noqa: E402 - bench/ is on the path from here on

KITTI_FRAME = "1242x375"  # W x H of a KITTI camera frame
ALL_OUTPUTS = ("depth", "depth/camera_info", "points", "depth/preview")


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", type=Path, help=".onnx/.engine/.pt (default: random-init ResNet-18 ONNX)")
    parser.add_argument(
        "--net",
        type=parse_model,
        default="resnet18+unet",
        metavar="ENCODER+DECODER|CONFIG.yaml",
        help="the random model (default: %(default)s; bench/inference.py --help lists the choices)",
    )
    parser.add_argument("--backend", default="auto", help="auto|tensorrt|onnxruntime|torch")
    parser.add_argument(
        "--threads", type=int, default=0, help="the node's threads parameter (0: one per core)"
    )
    parser.add_argument("--frame-size", default=KITTI_FRAME, metavar="WxH", help="published frame size")
    parser.add_argument(
        "--stream-rate", type=float, default=20.0, help="open-loop camera rate in Hz (default: %(default)s)"
    )
    parser.add_argument(
        "--stream-seconds", type=float, default=15.0, help="open-loop run length (default: %(default)s)"
    )
    parser.add_argument("--height", type=int, default=192, help="network height of the random model")
    parser.add_argument("--width", type=int, default=640, help="network width of the random model")
    parser.add_argument("--repeats", type=int, default=40, help="timed frames per peer (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    # Before rclpy initialises: a private domain, no traffic beyond this machine.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from ssim_depth.node import DepthNode

    from ssim_depth_core.export import export_onnx
    from ssim_depth_core.runtime import DepthEstimator

    width, height = (int(n) for n in args.frame_size.split("x"))
    frame = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    # KITTI's left colour camera (721.5 px focal length at 1242x375), scaled to the frame
    fx, fy, cx, cy = 721.5 * width / 1242, 721.5 * height / 375, 609.6 * width / 1242, 172.9 * height / 375
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=frame.tobytes())
    image.header.frame_id = "camera_color_left"
    kinds = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "depth/preview": Image}

    rclpy.init()
    executor = SingleThreadedExecutor()
    threading.Thread(target=executor.spin, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or export_onnx(
            random_checkpoint(Path(tmp), args.height, args.width, args.net), Path(tmp) / "model.onnx"
        )
        # the peer; the node opens its own copy with the same settings
        estimator = DepthEstimator(model, backend=args.backend, threads=args.threads or None)
        backend = f"{estimator.backend.name} {estimator.input_size[1]}x{estimator.input_size[0]}"
        client = rclpy.create_node("bench_client")
        arrived: dict[str, set[int]] = {topic: set() for topic in ALL_OUTPUTS}
        condition = threading.Condition()

        def on_output(topic: str, msg) -> None:
            with condition:
                arrived[topic].add(msg.header.stamp.sec)
                condition.notify_all()

        for topic in ALL_OUTPUTS:
            client.create_subscription(kinds[topic], topic, lambda m, t=topic: on_output(t, m), 10)
        image_pub = client.create_publisher(Image, "image", 10)
        info_pub = client.create_publisher(CameraInfo, "camera_info", 10)
        executor.add_node(client)
        stamps = iter(range(1, 1_000_000))

        def send(stamp: int) -> None:
            image.header.stamp.sec = info.header.stamp.sec = stamp
            info_pub.publish(info)
            image_pub.publish(image)

        def round_trip(outputs: tuple[str, ...]) -> None:
            """One frame in flight until all ``outputs`` for it arrive. A frame lost on the best-effort
            subscription (a node just created may not be matched yet) is sent again every 2 s."""
            stamp = next(stamps)
            for _ in range(15):
                send(stamp)
                with condition:
                    if condition.wait_for(lambda: all(stamp in arrived[t] for t in outputs), timeout=2):
                        return
            missing = [t for t in outputs if stamp not in arrived[t]]
            raise RuntimeError(f"no {missing} for frame {stamp} within 30 s")

        @contextlib.contextmanager
        def serving(name: str, outputs: tuple[str, ...], **params):
            """A depth node with the bench's settings and ``params``, discovered by the client."""
            overrides = {
                "model_path": str(model),
                "backend": args.backend,
                "threads": args.threads,
                "scale_source": "fixed",  # a random model is scale-less; its metres do not matter here
                "stats_period": 0.0,
                **params,
            }
            node = DepthNode(name, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
            executor.add_node(node)
            try:
                deadline = time.monotonic() + 30
                while image_pub.get_subscription_count() == 0 or any(
                    client.count_publishers(t) == 0 for t in outputs
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the client and the node did not discover each other in 30 s")
                    time.sleep(0.01)
                yield node
            finally:
                executor.remove_node(node)
                node.destroy_node()

        def measure(name: str, outputs: tuple[str, ...], **params) -> tuple[float, float]:
            with serving(name, outputs, **params):
                bare, through_node = [], []
                for i in range(args.warmup + args.repeats):
                    start = time.perf_counter()
                    estimator(frame)
                    middle = time.perf_counter()
                    round_trip(outputs)
                    if i >= args.warmup:
                        bare.append(middle - start)
                        through_node.append(time.perf_counter() - middle)
                return statistics.median(bare) * 1e3, statistics.median(through_node) * 1e3

        def stream(outputs: tuple[str, ...], **params) -> tuple[int, dict[str, int]]:
            """Open loop at --stream-rate for --stream-seconds: frames sent, frames answered per output."""
            with serving("stream", outputs, **params):
                round_trip(outputs)  # warm
                first = next(stamps)
                period, start = 1.0 / args.stream_rate, time.monotonic()
                count = int(args.stream_rate * args.stream_seconds)
                for i in range(count):
                    time.sleep(max(0.0, start + i * period - time.monotonic()))
                    send(first + i)
                time.sleep(2.0)  # the last frame's outputs
                sent = range(first, first + count)
                with condition:
                    return count, {t: len(arrived[t].intersection(sent)) for t in outputs}

        rows = {
            "depth only": measure("depth_only", ("depth",), publish_points=False, publish_preview=False),
            "all outputs": measure("all_outputs", ALL_OUTPUTS, publish_points=True, point_stride=2),
        }
        streamed = stream(("depth", "points"), publish_points=True, point_stride=2, publish_preview=False)
    executor.shutdown()
    rclpy.shutdown()

    model = f"model {args.model.name}" if args.model else f"random-init {model_name(args.net)}"
    threads = f"{args.threads} intra-op threads" if args.threads else "intra-op threads: one per core"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"# depth_node vs DepthEstimator, {width}x{height} rgb8 frames, {backend} ({threads}), {model}; "
        f"onnxruntime {ort.__version__}, {os.environ.get('RMW_IMPLEMENTATION', 'default RMW')}, {machine}, "
        f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.2f}, "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    print("| node outputs | estimator ms/frame | node ms/frame | node fps | node rate / estimator rate |")
    print("|---|---:|---:|---:|---:|")
    for name, (bare_ms, node_ms) in rows.items():
        print(f"| {name} | {bare_ms:.1f} | {node_ms:.1f} | {1e3 / node_ms:.1f} | {bare_ms / node_ms:.3f} |")
    print()
    bare_ms, node_ms = rows["depth only"]
    print(f"depth-only node rate / estimator rate: {bare_ms / node_ms:.3f} (goal >= 0.85)")
    sent, answered = streamed
    rates = ", ".join(f"{t} {n}/{sent} ({n / args.stream_seconds:.1f} fps)" for t, n in answered.items())
    slowest = min(answered.values()) / args.stream_seconds
    print(
        f"open loop, {sent} frames at {args.stream_rate:g} Hz (depth + points, stride 2): answered {rates}; "
        f"output rate / estimator rate (all outputs): {slowest * rows['all outputs'][0] / 1e3:.3f}"
    )
    if args.json:
        closed = {name: {"estimator_ms": bare, "node_ms": node} for name, (bare, node) in rows.items()}
        figures = {"closed_loop": closed, "open_loop": {"rate": args.stream_rate, "sent": sent, **answered}}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
