"""Launch the ssim_depth node (and optionally RViz).

    ros2 launch ssim_depth depth.launch.py model:=/models/depth.onnx [image:=/camera/image_raw] \\
        [camera_info:=/camera/camera_info] [backend:=tensorrt] [params_file:=my.yaml] [namespace:=front] \\
        [rviz:=true]

``model`` and ``backend`` override the parameters file only when given. With ``compressed: true`` in the
parameters the node subscribes ``<image>/compressed``. The default topics are those of the synthetic drives
and of the common KITTI-to-rosbag2 converters, so ``ros2 run ssim_depth play BAG`` (or
``PYTHONPATH=ros2_ws/src/ssim_depth python -m ssim_depth.tools.play BAG``) feeds the node as launched. The
shipped RViz config shows ``/depth/preview`` and ``/points`` in the ``camera_color_left`` frame (the
synthetic drives'); see rviz/depth.rviz to change it.

When the node exits (a missing model file, say: it logs one ``[FATAL] ... cannot start: <reason>`` line and
exits 1), the whole launch shuts down with that reason instead of leaving RViz running. The node's log lines
are coloured only when this launch's own output is a terminal (``RCUTILS_COLORIZED_OUTPUT``, unless set).
"""

import os
import re
import signal
import sys

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ssim_depth"
# ssim_depth_core.data.bagio's names; spelled out so that launching needs no ssim_depth_core import
KITTI_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
KITTI_CAMERA_INFO_TOPIC = "/kitti/camera_color_left/camera_info"
COLOUR_VARIABLE = "RCUTILS_COLORIZED_OUTPUT"
ANSI_ESCAPE = r"\x1b\[[0-9;?]*[A-Za-z]"  # colour codes
# rcutils' default line: [FATAL] [<time>] [<logger>]: <message>
FATAL_LINE = r"\[FATAL\](?: \[[^\]]*\])*:? ?(?P<message>.*)"


def _colour_env() -> dict[str, str]:
    """The node's ``RCUTILS_COLORIZED_OUTPUT``: the node runs on a pseudo-terminal (``emulate_tty``, for
    unbuffered output), so rcutils' own check (isatty) would always colour its lines; decide by this launch's
    output instead. A value set by the user is inherited unchanged."""
    if COLOUR_VARIABLE in os.environ:
        return {}
    return {COLOUR_VARIABLE: "1" if sys.stdout.isatty() else "0"}


def _fatal_message(text: bytes) -> str | None:
    """The message of the last ``[FATAL]`` line in a chunk of the node's output (colour codes removed)."""
    found = None
    for line in re.sub(ANSI_ESCAPE, "", text.decode(errors="replace")).splitlines():
        match = re.search(FATAL_LINE, line)
        if match:
            found = match["message"].strip() or line.strip()
    return found


def _exit_reason(returncode: int | None, fatal: str | None) -> str:
    """The launch's shutdown reason when the node has exited."""
    if returncode is not None and returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    if fatal:
        return f"depth_node {how}: {fatal}"
    return f"depth_node {how}" + ("" if returncode == 0 else " (its output above says why)")


def _depth_node(context, *_, **__):
    """The node, built once the launch arguments are known (overrides only for non-empty arguments)."""
    arg = {
        name: LaunchConfiguration(name).perform(context)
        for name in ("model", "backend", "image", "camera_info")
    }
    overrides = {"model_path": arg["model"], "backend": arg["backend"]}
    overrides = {key: value for key, value in overrides.items() if value}
    node = Node(
        package=PACKAGE,
        executable="depth_node",
        name="depth_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", arg["image"]),
            ("image/compressed", arg["image"] + "/compressed"),
            ("camera_info", arg["camera_info"]),
        ],
        output="screen",
        emulate_tty=True,
        additional_env=_colour_env(),
    )
    fatal: list[str] = []  # the node's last [FATAL] message, for the shutdown reason

    def remember_fatal(event) -> None:
        message = _fatal_message(event.text)
        if message:
            fatal[:] = [message]

    def shut_down(event, _context) -> list:
        """Without the node there is nothing to show: stop RViz and the launch, saying why."""
        return [Shutdown(reason=_exit_reason(event.returncode, fatal[-1] if fatal else None))]

    return [
        node,
        RegisterEventHandler(
            OnProcessIO(target_action=node, on_stdout=remember_fatal, on_stderr=remember_fatal)
        ),
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=shut_down)),
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "model", default_value="", description="model file (.onnx, .engine or .pt)"
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                description="auto|tensorrt|onnxruntime|torch (empty: params file)",
            ),
            DeclareLaunchArgument("image", default_value=KITTI_IMAGE_TOPIC, description="input image topic"),
            DeclareLaunchArgument(
                "camera_info", default_value=KITTI_CAMERA_INFO_TOPIC, description="input CameraInfo topic"
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "depth.yaml"),
                description="node parameters (YAML)",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="namespace of the node's topics"
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="also start RViz with depth.rviz"
            ),
            OpaqueFunction(function=_depth_node),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "rviz", "depth.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
                output="screen",
            ),
        ]
    )
