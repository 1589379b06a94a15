"""Replay a rosbag2's camera stream (Image or CompressedImage, plus its CameraInfo) at the recorded timing.

Messages are published as the CDR bytes stored in the bag (rclpy's serialized publishing): nothing is
decoded or re-encoded, so subscribers get exactly what was recorded, header stamps included. Topics are
chosen as training chooses them (:mod:`ssim_depth_core.data.rosbag`): the only image topic unless named,
and the CameraInfo topic in its namespace. Needs ``rosbags`` but no ROS 2 rosbag2 installation.

    ros2 run ssim_depth play BAG [--rate R] [--loop] [--image-topic T] [--camera-info-topic T]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ssim_depth_core.data.rosbag import (
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    open_reader,
    reader_path,
    select_camera_info_topic,
    select_image_topic,
)

MESSAGE_CLASSES = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage, CAMERA_INFO_TYPE: CameraInfo}


def check_positive(name: str, value: float) -> None:
    """Refuse a ``value`` (a rate, a timeout) that is not a finite number > 0; ValueError names it."""
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def play(
    bag: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    *,
    node: Node | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Publish the bag's image and CameraInfo messages under their recorded topic names.

    Args:
        bag: rosbag2 directory or ``.mcap``/``.db3`` file.
        rate: playback speed factor (2.0 = twice as fast); the gaps between receive times are divided by it.
        loop: start over at the end until ``stop`` is set (or Ctrl-C).
        image_topic, camera_info_topic: topics to play; default as in training (see the module docstring).
        node: publish through this node (its context must be initialised); default a node of its own in the
            default context, initialised and shut down here.
        stop: set it to end playback early.

    Returns:
        Number of messages published.
    """
    check_positive("rate", rate)
    path = Path(bag)
    reader = open_reader(reader_path(path))
    own_node = node is None
    stop = stop or threading.Event()
    try:
        topics = reader.topics
        image = select_image_topic(topics, image_topic, path, reader)
        info = select_camera_info_topic(topics, camera_info_topic, image, path)
        names = [name for name in (image, info) if name]
        if own_node:
            rclpy.init()
            node = rclpy.create_node("ssim_depth_player")
        publishers = {
            name: node.create_publisher(MESSAGE_CLASSES[topics[name].msgtype], name, QoSProfile(depth=10))
            for name in names
        }
        connections = [connection for name in names for connection in topics[name].connections]
        node.get_logger().info(
            f"playing {', '.join(names)} from {path} at {rate}x{' in a loop' if loop else ''}"
        )
        published = 0
        while not stop.is_set():
            start, first = time.monotonic(), None
            for connection, timestamp, raw in reader.messages(connections):
                first = timestamp if first is None else first
                delay = start + (timestamp - first) * 1e-9 / rate - time.monotonic()
                if (delay > 0 and stop.wait(delay)) or not node.context.ok():  # stopped, or Ctrl-C
                    stop.set()
                    break
                publishers[connection.topic].publish(bytes(raw))
                published += 1
            if not loop or first is None:
                break
        return published
    finally:
        reader.close()
        if own_node and node is not None:
            node.destroy_node()
            rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssim_depth play`` (or ``python -m ssim_depth.tools.play``)."""
    parser = argparse.ArgumentParser(prog="play", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--image-topic", help="image topic to play (default: the bag's only one)")
    parser.add_argument("--camera-info-topic", help="CameraInfo topic to play (default: the image's)")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:] if argv is None else argv)
    try:
        count = play(args.bag, args.rate, args.loop, args.image_topic, args.camera_info_topic)
    except KeyboardInterrupt:
        return 0
    except ValueError as error:
        parser.exit(2, f"play: {error}\n")
    print(f"published {count} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
