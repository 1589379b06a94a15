"""bench/metric_heldout.py: the pooled scale ratio against NumPy over the concatenated frames, and the
report's per-run summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metric_heldout():
    sys.path.insert(0, str(ROOT / "bench"))  # the script imports metric_depth by its name
    try:
        spec = importlib.util.spec_from_file_location("metric_heldout", ROOT / "bench" / "metric_heldout.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _record(run: str, drive_seed: int, ratios: np.ndarray) -> dict:
    return {
        "run": run,
        "drive_seed": drive_seed,
        "images": len(ratios),
        "scale_mean": float(ratios.mean()),
        "scale_std": float(ratios.std()),  # population std, as evaluation.MetricsAccumulator reports it
        "median": {"abs_rel": 0.1},
    }


def test_pooled_scale_equals_the_statistics_of_all_frames(metric_heldout):
    rng = np.random.default_rng(0)
    drives = [
        rng.normal(mean, std, size)
        for mean, std, size in ((0.97, 0.05, 58), (1.02, 0.03, 40), (0.9, 0.08, 7))
    ]
    mean, std = metric_heldout.pooled_scale([_record("a", seed, r) for seed, r in enumerate(drives)])
    frames = np.concatenate(drives)
    assert mean == pytest.approx(frames.mean(), rel=1e-12)
    assert std == pytest.approx(frames.std(), rel=1e-10)


def test_report_summarises_each_run_over_its_drives(metric_heldout):
    records = [
        _record("ms", 2, np.array([0.9, 1.0, 1.1])),  # std 0.0816: above 0.05
        _record("ms", 3, np.array([0.97, 0.99, 1.01])),  # mean 0.99, std 0.0163
        _record("velocity", 2, np.array([1.0, 1.0])),
    ]
    summary = {line.split(" | ")[0]: line for line in metric_heldout.report(records).splitlines()[-2:]}
    assert "| 1 of 2 | 0.990-1.000 | 0.9950 |" in summary["| ms"]  # pooled: (3 x 1.0 + 3 x 0.99) / 6
    assert summary["| velocity"].endswith("| 1 of 1 | 1.000-1.000 | 1.0000 | 0.0000 |")
