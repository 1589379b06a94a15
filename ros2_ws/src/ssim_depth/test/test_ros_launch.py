"""A failing depth_node ends the launch, with its reason, and says why in a plain line (issue 18).

``launch`` and ``launch_ros`` have no pip wheels, so the launch file runs here against stand-ins of the few
classes it uses (same modules, names and keyword arguments as launch's own; the real ones are exercised by
test_ros_package.py::test_launch_description where installed): the node action's exit handler and output
handler are called as launch calls them. The node itself runs as a real process with a missing model file.
"""

from __future__ import annotations

import os
import pty
import random
import re
import select
import subprocess
import sys
import types
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT = PACKAGE_DIR.parents[2]
LAUNCH_FILE = ROOT / "launch" / "depth.launch.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Action:
    """Stand-in of a launch entity: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _Configuration(_Action):
    def perform(self, context) -> str:
        return context[self.args[0]]


def _stand_ins() -> dict[str, types.ModuleType]:
    names = {
        "launch": [],
        "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction", "RegisterEventHandler", "Shutdown"],
        "launch.conditions": ["IfCondition"],
        "launch.event_handlers": ["OnProcessExit", "OnProcessIO"],
        "launch.launch_description": ["LaunchDescription"],
        "launch.substitutions": [],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
    }
    modules = {}
    for module, classes in names.items():
        modules[module] = types.ModuleType(module)
        for name in classes:
            setattr(modules[module], name, type(name, (_Action,), {}))
    modules["launch.substitutions"].LaunchConfiguration = _Configuration
    return modules


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's namespace, its imports served by the stand-ins."""
    modules = _stand_ins()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace: dict = {}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    return namespace, modules


ARGUMENTS = {"model": "/missing/model.onnx", "backend": "", "image": "/cam/image", "camera_info": "/cam/info"}
FATAL = (
    b"\x1b[31m[FATAL] [1796409808.728964253] [depth_node]: cannot start: /depth_node: model_path "
    b"'/missing/model.onnx' is not a file\x1b[0m\n"
)


def _wiring(launch_file):
    namespace, modules = launch_file
    entities = namespace["_depth_node"](ARGUMENTS)
    (node,) = [e for e in entities if isinstance(e, modules["launch_ros.actions"].Node)]
    handlers = [e.args[0] for e in entities if isinstance(e, modules["launch.actions"].RegisterEventHandler)]
    (on_exit,) = [h for h in handlers if isinstance(h, modules["launch.event_handlers"].OnProcessExit)]
    (on_io,) = [h for h in handlers if isinstance(h, modules["launch.event_handlers"].OnProcessIO)]
    assert on_exit.kwargs["target_action"] is node and on_io.kwargs["target_action"] is node
    return node, on_exit.kwargs["on_exit"], on_io, modules["launch.actions"].Shutdown


def test_the_node_exiting_shuts_the_launch_down_with_its_fatal_message(launch_file):
    node, on_exit, on_io, shutdown = _wiring(launch_file)
    assert node.kwargs["parameters"][1] == {"model_path": "/missing/model.onnx"}
    on_io.kwargs["on_stdout"](types.SimpleNamespace(text=b"[INFO] [1.0] [depth_node]: loading\n"))
    on_io.kwargs["on_stderr"](types.SimpleNamespace(text=FATAL))
    (action,) = on_exit(types.SimpleNamespace(returncode=1), None)
    assert isinstance(action, shutdown)
    assert action.kwargs["reason"] == (
        "depth_node exited with code 1: cannot start: /depth_node: model_path '/missing/model.onnx' is not "
        "a file"
    )


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (1, "depth_node exited with code 1 (its output above says why)"),
        (-9, "depth_node was killed by SIGKILL (its output above says why)"),
        (0, "depth_node exited with code 0"),
    ],
)
def test_the_shutdown_reason_without_a_fatal_line(launch_file, returncode, reason):
    _, on_exit, on_io, _ = _wiring(launch_file)
    on_io.kwargs["on_stderr"](types.SimpleNamespace(text=b"Traceback (most recent call last):\n"))
    (action,) = on_exit(types.SimpleNamespace(returncode=returncode), None)
    assert action.kwargs["reason"] == reason


def test_the_node_is_coloured_only_when_the_launch_output_is_a_terminal(launch_file, monkeypatch):
    namespace, _ = launch_file
    monkeypatch.delenv("RCUTILS_COLORIZED_OUTPUT", raising=False)
    for terminal, value in ((False, "0"), (True, "1")):
        monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(isatty=lambda t=terminal: t))
        node, *_ = _wiring(launch_file)
        assert node.kwargs["emulate_tty"] is True  # a pseudo-terminal: rcutils alone would always colour
        assert node.kwargs["additional_env"] == {"RCUTILS_COLORIZED_OUTPUT": value}
    monkeypatch.setenv("RCUTILS_COLORIZED_OUTPUT", "1")  # the user's choice is inherited
    assert _wiring(launch_file)[0].kwargs["additional_env"] == {}
    assert namespace["_colour_env"]() == {}


# ------------------------------------------------------------------------------------------ the real node
def _node_env(**extra: str) -> dict[str, str]:
    env = dict(
        os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("RCUTILS_COLORIZED_OUTPUT", None)
    return {**env, **extra}


NODE = [sys.executable, "-m", "ssim_depth.node", "--ros-args", "-p", "model_path:=/missing/model.onnx"]


def _fatal_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "FATAL" in line]


def test_a_node_that_cannot_start_says_why_in_one_plain_line_when_piped():
    pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")
    result = subprocess.run(NODE, env=_node_env(), capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "\x1b" not in output, repr(output)
    assert "Traceback" not in output
    (line,) = _fatal_lines(output)
    assert re.fullmatch(
        r"\[FATAL\] \[[\d.]+\] \[depth_node\]: cannot start: .*model_path '/missing/model\.onnx' is not "
        r"a file",
        line,
    ), line


def _run_on_a_terminal(env: dict[str, str]) -> tuple[int, str]:
    """Run the node with stdout and stderr on a pseudo-terminal (as launch's emulate_tty does)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(NODE, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_the_colour_follows_the_variable_the_launch_file_sets():
    pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")
    code, plain = _run_on_a_terminal(_node_env(RCUTILS_COLORIZED_OUTPUT="0"))
    assert code == 1, plain
    (line,) = _fatal_lines(plain)
    assert "\x1b" not in plain and "cannot start:" in line
    code, coloured = _run_on_a_terminal(_node_env(RCUTILS_COLORIZED_OUTPUT="1"))
    assert code == 1 and ANSI.search(coloured), repr(coloured)
    assert ANSI.sub("", _fatal_lines(coloured)[0]).strip().endswith("is not a file")
