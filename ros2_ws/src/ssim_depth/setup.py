"""ament_python setup for the ssim_depth ROS 2 package.

The launch file lives in the repository's top-level ``launch/`` folder (shared with the docs and the
Dockerfile); it is installed from there into ``share/ssim_depth/launch``. Data file paths are relative to
this folder, which colcon and pip use as the working directory.
"""

import os
from pathlib import Path

from setuptools import setup

PACKAGE = "ssim_depth"
HERE = Path(__file__).resolve().parent
LAUNCH_DIR = (HERE / ".." / ".." / ".." / "launch").resolve()


def _files(folder: Path, pattern: str) -> list[str]:
    """``folder/pattern`` relative to this file (colcon requires relative data files); none is an error."""
    found = sorted(os.path.relpath(p, HERE) for p in folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"{PACKAGE}: no '{pattern}' in {folder} (incomplete repository checkout?)")
    return found


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE, f"{PACKAGE}.tools"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files(LAUNCH_DIR, "*.launch.py")),
        (f"share/{PACKAGE}/config", _files(HERE / "config", "*.yaml")),
        (f"share/{PACKAGE}/rviz", _files(HERE / "rviz", "*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ssim_depth maintainers",
    maintainer_email="maintainers@ssim-depth.invalid",
    description="Monocular depth node: Image in; 32FC1 depth, PointCloud2 and a preview out",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "depth_node = ssim_depth.node:main",
            "play = ssim_depth.tools.play:main",
            "record = ssim_depth.tools.record:main",
            "pipeline = ssim_depth.tools.pipeline:main",
        ],
    },
)
