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
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ssim_depth"
# ssim_depth_core.data.bagio's names; spelled out so that launching needs no ssim_depth_core import
KITTI_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
KITTI_CAMERA_INFO_TOPIC = "/kitti/camera_color_left/camera_info"


def _depth_node(context, *_, **__):
    """The node, built once the launch arguments are known (overrides only for non-empty arguments)."""
    arg = {
        name: LaunchConfiguration(name).perform(context)
        for name in ("model", "backend", "image", "camera_info")
    }
    overrides = {"model_path": arg["model"], "backend": arg["backend"]}
    overrides = {key: value for key, value in overrides.items() if value}
    return [
        Node(
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
        )
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
