"""Both distributions, the core ``ssim-depth-core`` and the ROS package ``ssim_depth``, install side by side.

They used to normalise to one project name, so installing the ROS package uninstalled the core. The test
installs both, one after the other as a newcomer would, into one fresh virtual environment (editable, no
dependencies, offline: the build borrows this interpreter's pip and setuptools), then runs the console
scripts with this environment's heavy dependencies (torch, rclpy) made visible.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROS_PACKAGE = REPO / "ros2_ws" / "src" / "ssim_depth"

# Runs in the fresh environment: its own distributions, and for each console script its distribution,
# whether it loads as a callable and the file that defines it.
PROBE = """
import importlib.metadata as md, json, sys, sysconfig
scripts = {ep.name: ep for ep in md.entry_points(group="console_scripts")}
report = {"own": sorted(d.metadata["Name"] for d in md.distributions(path=[sysconfig.get_path("purelib")]))}
for name in ("ssim-depth", "depth_node"):
    if name in scripts:
        target = scripts[name].load()
        source = sys.modules[target.__module__].__file__
        report[name] = [scripts[name].dist.metadata["Name"], callable(target), source]
print(json.dumps(report))
"""


def _build_tools(folder: Path) -> Path:
    """A folder with this interpreter's pip and setuptools (with the metadata that registers setuptools'
    commands), for a fresh environment that has neither to build the editable wheels offline."""
    folder.mkdir()
    for module in ("pip", "setuptools", "_distutils_hack"):
        (folder / module).symlink_to(Path(importlib.util.find_spec(module).origin).parent)
    setuptools = importlib.metadata.distribution("setuptools")
    record = next(f for f in setuptools.files if f.name == "RECORD")
    (folder / record.parent.name).symlink_to(Path(setuptools.locate_file(record)).parent)
    return folder


def _run(cmd: list, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` (not the repository: ``python -c`` would find metadata lying in its root)."""
    result = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_core_and_ros_package_install_into_one_environment(tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python, scripts = env_dir / "bin" / "python", env_dir / "bin"
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install_env = {**run_env, "PYTHONPATH": str(_build_tools(tmp_path / "tools"))}
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e"]
    _run([*pip, REPO], install_env, tmp_path)
    _run([*pip, ROS_PACKAGE], install_env, tmp_path)

    # Only now this environment's dependencies: pip installed the two above without seeing them. addsitedir
    # also runs their .pth files (the ROS wheels' native library bootstrap among them).
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "zz_dependencies.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n"
    )

    probe = json.loads(_run([python, "-c", PROBE], run_env, tmp_path).stdout)
    assert probe["own"] == ["ssim-depth-core", "ssim_depth"]
    assert probe["ssim-depth"] == ["ssim-depth-core", True, str(REPO / "ssim_depth_core" / "apps" / "cli.py")]
    assert probe["depth_node"] == ["ssim_depth", True, str(ROS_PACKAGE / "ssim_depth" / "node.py")]
    assert (scripts / "depth_node").is_file()
    help_text = _run([scripts / "ssim-depth", "--help"], run_env, tmp_path).stdout
    assert "synth" in help_text and "train" in help_text
