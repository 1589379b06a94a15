"""What bench/fuzz_node.py and bench/soak_node.py share: small models, the depth node as a separate process
(its log, its resident memory), a private ROS graph.

Not a benchmark itself. The node runs as ``python -c "from ssim_depth.node import main; ..."`` with the
repository's packages on PYTHONPATH, exactly as ``ros2 run ssim_depth depth_node`` runs it, so a crash ends
that process (visible as its exit code) and its memory is its own (read from /proc/<pid>/status).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / "ros2_ws" / "src" / "ssim_depth"
NODE_COMMAND = "import sys; from ssim_depth.node import main; sys.exit(main())"
LOG_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[")
TOTALS = re.compile(r"totals: processed (\d+), dropped (\d+), rejected (\d+)")


def private_graph() -> None:
    """A random domain, discovery limited to localhost; call before rclpy initialises."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    for path in (str(PACKAGE), str(REPOSITORY)):
        if path not in sys.path:
            sys.path.insert(0, path)


def small_models(folder: Path, seeds: tuple[int, ...] = (0,)) -> list[tuple[Path, Path]]:
    """(checkpoint .pt, exported .onnx) per seed: randomly initialised 64x96 networks (the test suite's
    architecture, depth range 0.5..80 m, scale-less), different weights per seed."""
    import torch

    from ssim_depth_core.checkpoint import save_atomic
    from ssim_depth_core.config import DataConfig, ModelConfig, TrainConfig, to_dict
    from ssim_depth_core.export.onnx import export_onnx
    from ssim_depth_core.models import MonodepthModel

    config = TrainConfig(
        model=ModelConfig(min_depth=0.5, max_depth=80.0), data=DataConfig(height=64, width=96)
    )
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = MonodepthModel(config.model, config.data.frame_ids)
        checkpoint = folder / f"model{seed}.pt"
        save_atomic({"config": to_dict(config), "model": model.state_dict()}, checkpoint)
        models.append((checkpoint, export_onnx(checkpoint, folder / f"model{seed}.onnx")))
    return models


def rss_kib(pid: int) -> int | None:
    """Resident memory of process ``pid`` in KiB (VmRSS), None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class NodeProcess:
    """One depth node process in ``namespace`` with ``params`` (name -> value, written as ``-p name:=value``),
    its output (stdout and stderr) in ``log``."""

    def __init__(self, namespace: str, params: dict[str, object], log: Path) -> None:
        self.namespace, self.log = namespace, log
        arguments = ["-r", f"__ns:={namespace}"]
        for name, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            arguments += ["-p", f"{name}:={text}"]
        python_path = os.pathsep.join([str(PACKAGE), str(REPOSITORY), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": python_path.rstrip(os.pathsep)}
        env.update(RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0", PYTHONUNBUFFERED="1")
        self.command = [sys.executable, "-c", NODE_COMMAND, "--ros-args", *arguments]
        self._file = open(log, "ab")
        self.process = subprocess.Popen(
            self.command, env=env, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid) if self.alive() else None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (a clean shutdown), SIGKILL after ``timeout``; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        self._file.close()
        return code

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def count_log_lines(log: Path) -> dict[str, int]:
    """Lines of a node log by rcutils severity (DEBUG..FATAL); ``other``: lines that are not rcutils log
    lines (e.g. what libjpeg/libpng print to stderr, tracebacks)."""
    counts = dict.fromkeys(("DEBUG", "INFO", "WARN", "ERROR", "FATAL", "other"), 0)
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        counts[match.group(1) if match else "other"] += 1
    return counts


def last_totals(log: Path) -> dict[str, int] | None:
    """processed, dropped, rejected of the node's last statistics line."""
    found = TOTALS.findall(log.read_text(errors="replace"))
    if not found:
        return None
    return dict(zip(("processed", "dropped", "rejected"), map(int, found[-1]), strict=True))


def machine() -> str:
    """CPU model, core count and load average, for the record."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"
