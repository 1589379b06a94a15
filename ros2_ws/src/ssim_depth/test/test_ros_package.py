"""The ssim_depth ROS 2 package: colcon install tree, executables, params file, launch and RViz files."""

from __future__ import annotations

import ast
import os
import py_compile
import random
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT = PACKAGE_DIR.parents[2]  # the repository: ROOT/ros2_ws/src/ssim_depth
LAUNCH_FILE = ROOT / "launch" / "depth.launch.py"
COLCON = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """``colcon build`` of ros2_ws into a temporary build/install/log base; returns the package's prefix."""
    if COLCON is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    base = tmp_path_factory.mktemp("colcon")
    result = subprocess.run(
        [COLCON, "--log-base", str(base / "log"), "build", "--base-paths", str(ROOT / "ros2_ws" / "src"),
         "--build-base", str(base / "build"), "--install-base", str(base / "install"),
         "--packages-select", "ssim_depth"],
        cwd=base, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return base / "install" / "ssim_depth"


def test_colcon_install_tree(install):
    share = install / "share" / "ssim_depth"
    for path in (
        install / "lib" / "ssim_depth" / "depth_node",
        install / "lib" / "ssim_depth" / "play",
        install / "lib" / "ssim_depth" / "record",
        install / "lib" / "ssim_depth" / "pipeline",
        install / "share" / "ament_index" / "resource_index" / "packages" / "ssim_depth",
        share / "package.xml",
        share / "launch" / "depth.launch.py",
        share / "config" / "depth.yaml",
        share / "rviz" / "depth.rviz",
    ):
        assert path.is_file(), f"missing from the install tree: {path.relative_to(install)}"
    assert os.access(install / "lib" / "ssim_depth" / "depth_node", os.X_OK)
    assert (share / "launch" / "depth.launch.py").read_bytes() == LAUNCH_FILE.read_bytes()
    site = list((install / "lib").glob("python3*/site-packages/ssim_depth/node.py"))
    assert len(site) == 1, "the ssim_depth Python package is not installed"
    assert (site[0].parent / "tools" / "pipeline.py").is_file(), "ssim_depth.tools is not installed"
    # colcon must not leave build artefacts in the source tree
    assert not list(PACKAGE_DIR.glob("*.egg-info")) and not (PACKAGE_DIR / "build").exists()


def test_installed_node_rejects_missing_model_with_the_shipped_params(install):
    """The installed executable runs, loads the installed params file (typed values), names the problem."""
    pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")
    site = next((install / "lib").glob("python3*/site-packages"))
    env = dict(
        os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    params = install / "share" / "ssim_depth" / "config" / "depth.yaml"
    result = subprocess.run(
        [sys.executable, str(install / "lib" / "ssim_depth" / "depth_node"), "--ros-args", "--params-file",
         str(params)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "model_path is empty" in result.stdout + result.stderr


@pytest.mark.parametrize("tool", ["play", "record", "pipeline"])
def test_installed_tools_start(install, tool):
    """Each tool's console script finds its module in the installed tree (``ros2 run ssim_depth TOOL``)."""
    pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")
    site = next((install / "lib").glob("python3*/site-packages"))
    python_path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=python_path)
    result = subprocess.run(
        [sys.executable, str(install / "lib" / "ssim_depth" / tool), "--help"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"usage: {tool}" in result.stdout


def test_params_file_matches_the_node_defaults():
    pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")
    sys.path.insert(0, str(PACKAGE_DIR))
    from dataclasses import asdict

    from ssim_depth.node import _DESCRIPTORS, DepthParams

    values = yaml.safe_load((PACKAGE_DIR / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"]
    defaults = asdict(DepthParams())
    assert values == defaults
    assert all(type(values[name]) is type(defaults[name]) for name in defaults)  # 0.0, not 0, for floats
    assert set(_DESCRIPTORS) == set(defaults)


def test_package_xml():
    root = ET.parse(PACKAGE_DIR / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "ssim_depth"
    assert root.find("export").findtext("build_type") == "ament_python"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "launch", "launch_ros"} <= exec_depends


def test_launch_file_compiles_and_matches_the_data_defaults():
    py_compile.compile(str(LAUNCH_FILE), doraise=True)
    from ssim_depth_core.data import bagio

    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(LAUNCH_FILE.read_text()).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert constants["KITTI_IMAGE_TOPIC"] == bagio.KITTI_IMAGE_TOPIC
    assert constants["KITTI_CAMERA_INFO_TOPIC"] == bagio.KITTI_CAMERA_INFO_TOPIC


def test_launch_description(install, monkeypatch):
    """Only where launch and launch_ros are installed (a ROS 2 distribution, the Docker image)."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (it has no pip wheel)")
    from launch.actions import DeclareLaunchArgument

    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{install}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    namespace: dict = {}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    description = namespace["generate_launch_description"]()
    arguments = {a.name: a for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert set(arguments) == {"model", "backend", "image", "camera_info", "params_file", "namespace", "rviz"}
    default = "".join(s.perform(None) for s in arguments["params_file"].default_value)
    assert Path(default) == install / "share" / "ssim_depth" / "config" / "depth.yaml"


def test_rviz_config_shows_the_node_outputs_in_the_data_frame():
    from ssim_depth_core.data.bagio import KITTI_FRAME_ID

    config = yaml.safe_load((PACKAGE_DIR / "rviz" / "depth.rviz").read_text())["Visualization Manager"]
    assert config["Global Options"]["Fixed Frame"] == KITTI_FRAME_ID
    topics = {d["Class"]: d["Topic"]["Value"] for d in config["Displays"] if "Topic" in d}
    assert topics == {
        "rviz_default_plugins/Image": "/depth/preview",
        "rviz_default_plugins/PointCloud2": "/points",
    }


def test_dockerfile_copies_existing_paths_onto_a_pinned_ros_image():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    base = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE_IMAGE="))
    assert base.startswith("ros:kilted-") and not base.endswith(":latest")
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    sources = [source for group in copies for source in group]
    assert {"pyproject.toml", "ssim_depth_core", "launch", "ros2_ws/src"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
