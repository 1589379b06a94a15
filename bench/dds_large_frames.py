"""Delivery of large raw images between two processes on one host, per subscription QoS and DDS transport.

Peer: the default setting (sensor-data QoS subscriber, Fast DDS' default builtin transports), measured in the
same run. A publisher process sends ``--frames`` rgb8 images of each ``--sizes`` at ``--rate`` Hz (reliable
publisher QoS, keep last 10, as ``ros2 bag play`` and most drivers); a subscriber process counts what arrives.
Each setting runs in fresh processes on a private domain (random ``ROS_DOMAIN_ID``, localhost discovery).
The last setting's subscriber is ``depth_node`` itself, its image subscription overridden to reliable (a
random-init ResNet-18 at 192x64, depth at the network's size, no cloud or preview): it counts the frames
*answered* (depth published), so delivery and the node's worker both have to keep up with the camera.

    python bench/dds_large_frames.py --sizes 640x480 1280x720 1920x1080 --frames 30 --rate 10

Prints a markdown table (frames received / sent, and the ratio against the default setting).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (subscriber: a counting subscription of this reliability, or "node"; extra environment)
SETTINGS = {
    "default (sensor data, best effort)": ("best_effort", {}),
    "reliable subscription": ("reliable", {}),
    "best effort + FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA": (
        "best_effort",
        {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
    ),
    "reliable + FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA": (
        "reliable",
        {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
    ),
    "depth_node, reliable image subscription: frames answered": ("node", {}),
}
NODE_MODEL = (64, 192)  # H x W of the node's random network
PEER = next(iter(SETTINGS))


def publish(width: int, height: int, frames: int, rate: float, topic: str = "image") -> None:
    """Publish ``frames`` rgb8 images, stamped 1 s, 2 s, ..., on ``topic`` once a subscriber is matched
    (runs in the publisher process)."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_publisher")
    publisher = node.create_publisher(Image, topic, 10)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let discovery settle on both sides
    pixels = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    for i in range(frames):
        msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels)
        msg.header.stamp.sec = i + 1
        publisher.publish(msg)
        time.sleep(1.0 / rate)
    time.sleep(2.0)  # let a reliable writer finish its repairs
    node.destroy_node()
    rclpy.shutdown()


def subscribe(reliability: str, seconds: float) -> None:
    """Count the distinct frames received within ``seconds``; print the count (subscriber process)."""
    import rclpy
    from rclpy.qos import QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_subscriber")
    qos = qos_profile_sensor_data
    if reliability == "reliable":
        qos = type(qos)(depth=qos.depth, reliability=QoSReliabilityPolicy.RELIABLE, history=qos.history)
    stamps = set()
    node.create_subscription(Image, "image", lambda m: stamps.add(m.header.stamp.sec), qos)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(len(stamps), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def answer(model: str, seconds: float) -> None:
    """Run ``depth_node`` on ``model`` for ``seconds``; print the number of distinct frames it published depth
    for (subscriber process)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "ssim_depth"))
    from ssim_depth.node import DepthNode

    rclpy.init()
    params = {
        "model_path": model,
        "scale_source": "fixed",  # a random model is scale-less; its metres do not matter here
        "output_resolution": "network",
        "publish_points": False,
        "publish_preview": False,
        "stats_period": 0.0,
        "qos_overrides./image.subscription.reliability": "reliable",
    }
    node = DepthNode("depth_node", parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    listener = rclpy.create_node("bench_listener")
    stamps = set()
    listener.create_subscription(Image, "depth", lambda m: stamps.add(m.header.stamp.sec), 10)
    executor = SingleThreadedExecutor()
    for each in (node, listener):
        executor.add_node(each)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    print(len(stamps), flush=True)
    executor.shutdown()
    rclpy.shutdown()


def node_model(folder: Path) -> Path:
    """The node's random-init model as ONNX (built once, before any timing)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from inference import random_checkpoint

    from ssim_depth_core.export import export_onnx

    return export_onnx(random_checkpoint(folder, *NODE_MODEL), folder / "model.onnx")


def measure(
    size: tuple[int, int], frames: int, rate: float, subscriber: str, extra: dict, model: Path | None
) -> int:
    """Frames received (answered, for the node) by a subscriber process of one setting."""
    env = {
        **os.environ,
        **extra,
        "ROS_DOMAIN_ID": str(random.randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    seconds = frames / rate + 12
    me = [sys.executable, __file__]
    role = ["node", str(model)] if subscriber == "node" else ["sub", subscriber]
    sub = subprocess.Popen([*me, "--role", *role, str(seconds)], env=env, stdout=subprocess.PIPE)
    pub = subprocess.Popen([*me, "--role", "pub", f"{size[0]}x{size[1]}", str(frames), str(rate)], env=env)
    pub.wait()
    out, _ = sub.communicate()
    return int(out.decode().split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--settings", nargs="+", type=int, help="indices into the settings (default: all)")
    parser.add_argument(
        "--role", nargs="+", help=argparse.SUPPRESS
    )  # internal: a publisher/subscriber process
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "pub":
            width, height = map(int, rest[0].split("x"))
            publish(width, height, int(rest[1]), float(rest[2]), *rest[3:])
        elif role == "node":
            answer(rest[0], float(rest[1]))
        else:
            subscribe(rest[0], float(rest[1]))
        return
    names = [n for i, n in enumerate(SETTINGS) if args.settings is None or i in args.settings]
    if PEER not in names:
        names.insert(0, PEER)
    print(f"{args.frames} rgb8 frames at {args.rate:g} Hz per size and setting")
    print("| setting | " + " | ".join(args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    peer = {}
    with tempfile.TemporaryDirectory() as folder:
        model = node_model(Path(folder)) if any(SETTINGS[name][0] == "node" for name in names) else None
        for name in names:
            print_row(name, args, peer, model)


def print_row(name: str, args: argparse.Namespace, peer: dict[str, int], model: Path | None) -> None:
    """Measure setting ``name`` at every size and print its table row; the peer's counts fill ``peer``."""
    cells = []
    for text in args.sizes:
        size = tuple(map(int, text.split("x")))
        got = measure(size, args.frames, args.rate, *SETTINGS[name], model)
        if name == PEER:
            peer[text] = got
        ratio = f"{got / peer[text]:.1f}x default" if peer[text] else "default received 0"
        cells.append(f"{got}/{args.frames} ({ratio})" if name != PEER else f"{got}/{args.frames}")
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
