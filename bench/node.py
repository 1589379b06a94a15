"""ROS node overhead: image publish -> depth receive through ``depth_node`` vs the bare DepthEstimator call.

Peers, measured in one process on the same model and the same KITTI-size (1242x375 rgb8) frame, alternating
frame by frame so that both see the same machine load:

- bare: ``DepthEstimator(frame)`` on the RGB array (same model file and backend as the node's);
- node: a client publishes the frame as sensor_msgs/Image (+ CameraInfo) and waits until the node's output
  for that stamp arrives: DDS transport both ways, message decoding, inference, depth encoding, publishing.
  Measured twice: depth only (points and preview off; the adapter's cost) and with every output (depth,
  depth/camera_info, points at stride 2, preview), waiting for all of them.

The ratio is bare time / node time = node rate / estimator rate (goal >= 0.85 for depth only). Closed loop
(one frame in flight), so it measures per-frame cost, not the node's drop-newest throughput behaviour.

    .venv/bin/python bench/node.py                          # random-init ResNet-18 at 640x192, onnxruntime
    .venv/bin/python bench/node.py --model depth.onnx --backend tensorrt --repeats 100
"""

from __future__ import annotations

import argparse
import datetime
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

FRAME_SIZE = (375, 1242)  # (H, W) of a KITTI camera frame
ALL_OUTPUTS = ("depth", "depth/camera_info", "points", "depth/preview")


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", type=Path, help=".onnx/.engine/.pt (default: random-init ResNet-18 ONNX)")
    parser.add_argument("--backend", default="auto", help="auto|tensorrt|onnxruntime|torch")
    parser.add_argument("--height", type=int, default=192, help="network height of the random model")
    parser.add_argument("--width", type=int, default=640, help="network width of the random model")
    parser.add_argument("--repeats", type=int, default=40, help="timed frames per peer (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    # Before rclpy initialises: a private domain, no traffic beyond this machine.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    from inference import random_checkpoint
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from ssim_depth.node import DepthNode

    from ssim_depth_core.export import export_onnx
    from ssim_depth_core.runtime import DepthEstimator

    frame = cv2.resize(data.astronaut(), FRAME_SIZE[::-1], interpolation=cv2.INTER_AREA)
    height, width = FRAME_SIZE
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [721.5, 0.0, 609.6, 0.0, 721.5, 172.9, 0.0, 0.0, 1.0]
    info.p = [721.5, 0.0, 609.6, 0.0, 0.0, 721.5, 172.9, 0.0, 0.0, 0.0, 1.0, 0.0]
    image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=frame.tobytes())
    image.header.frame_id = "camera_color_left"
    kinds = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "depth/preview": Image}

    rclpy.init()
    executor = SingleThreadedExecutor()
    threading.Thread(target=executor.spin, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or export_onnx(
            random_checkpoint(Path(tmp), args.height, args.width), Path(tmp) / "model.onnx"
        )
        estimator = DepthEstimator(model, backend=args.backend)  # the peer; the node opens its own copy
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

        def round_trip(outputs: tuple[str, ...]) -> None:
            image.header.stamp.sec = info.header.stamp.sec = stamp = next(stamps)
            info_pub.publish(info)
            image_pub.publish(image)
            with condition:
                if not condition.wait_for(lambda: all(stamp in arrived[t] for t in outputs), timeout=30):
                    raise RuntimeError(f"no {outputs} for frame {stamp} within 30 s")

        def measure(name: str, outputs: tuple[str, ...], **params) -> tuple[float, float]:
            overrides = {"model_path": str(model), "backend": args.backend, "stats_period": 0.0, **params}
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
            finally:
                executor.remove_node(node)
                node.destroy_node()

        rows = {
            "depth only": measure("depth_only", ("depth",), publish_points=False, publish_preview=False),
            "all outputs": measure("all_outputs", ALL_OUTPUTS, publish_points=True, point_stride=2),
        }
    executor.shutdown()
    rclpy.shutdown()

    model_name = f"model {args.model.name}" if args.model else "random-init ResNet-18"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"# depth_node vs DepthEstimator, {width}x{height} rgb8 frames, {backend}, {model_name}; "
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


if __name__ == "__main__":
    main()
