"""Malformed messages of every kind against the depth node in its own process: bench/fuzz_node.py, briefly.

The bench itself (a real rclpy publisher, the node started as ``ros2 run`` starts it) runs with a few hundred
messages; the full run (>= 10,000 messages) and its figures are in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")

REPOSITORY = Path(__file__).resolve().parents[4]
BENCH = REPOSITORY / "bench" / "fuzz_node.py"


def test_fuzzed_nodes_never_crash_answer_every_probe_and_stay_quiet(tmp_path):
    env = dict(
        os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"
    )
    figures = tmp_path / "fuzz.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--messages", "300", "--burst", "30", "--json", str(figures),
         "--logs", str(tmp_path / "logs")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(figures.read_text())
    assert result["messages"] == 300 and result["crashes"] == 0
    assert result["exit_codes_after_sigint"] == {"raw": 0, "compressed": 0}
    assert result["probes_answered"] == result["probes_sent"] == {"raw": 10, "compressed": 10}
    kinds = {kind.split(": ", 1)[0] for kind in result["sent"]}
    assert kinds == {"raw", "compressed", "info"} and len(result["sent"]) >= 35  # (nearly) every kind
    for node, lines in result["log_lines"].items():
        # the node throttles its per-frame warnings; nothing else (libjpeg/libpng) writes to its stderr
        assert lines["other"] == 0, (node, (tmp_path / "logs" / f"{node}.log").read_text()[-3000:])
        assert lines["ERROR"] == lines["FATAL"] == 0, node
        assert lines["WARN"] <= 4 * (result["duration_s"] / 5 + 1), node  # 5 s throttle, 4 warning sites
    assert not result["bad_depth_camera_info"] and not result["bad_depth_images"]
