"""Settings of the whole test session (``tests/`` and the ROS package's ``test/``)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROS_TESTS = Path(__file__).resolve().parent / "ros2_ws" / "src" / "ssim_depth" / "test"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n N --dist loadgroup`` (``make test``): each module runs on one worker, so its
    module fixtures (trained models, a served bag) are built once; the ROS package's tests share one worker,
    so no two of their DDS sessions (each on a random domain id) run at once and meet on the same domain."""
    for item in items:
        group = "dds" if ROS_TESTS in item.path.parents else item.path.stem
        item.add_marker(pytest.mark.xdist_group(group))
