"""bench/metric_heldout.py: the pooled scale ratio against NumPy over the concatenated frames, and the
report's per-run summary."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def metric_heldout(bench_script):
    return bench_script("metric_heldout")


def _record(run: str, drive_seed: int, ratios: np.ndarray, pixel_ratios: np.ndarray | None = None) -> dict:
    record = {
        "run": run,
        "drive_seed": drive_seed,
        "images": len(ratios),
        "scale_mean": float(ratios.mean()),
        "scale_std": float(ratios.std()),  # population std, as evaluation.MetricsAccumulator reports it
        "median": {"abs_rel": 0.1},
    }
    if pixel_ratios is not None:
        record.update(pixel_scale_mean=float(pixel_ratios.mean()), pixel_scale_std=float(pixel_ratios.std()))
    return record


def test_pooled_scale_equals_the_statistics_of_all_frames(metric_heldout):
    rng = np.random.default_rng(0)
    drives = [
        rng.normal(mean, std, size)
        for mean, std, size in ((0.97, 0.05, 58), (1.02, 0.03, 40), (0.9, 0.08, 7))
    ]
    records = [_record("a", seed, r, pixel_ratios=r / 2) for seed, r in enumerate(drives)]
    mean, std = metric_heldout.pooled_scale(records)
    frames = np.concatenate(drives)
    assert mean == pytest.approx(frames.mean(), rel=1e-12)
    assert std == pytest.approx(frames.std(), rel=1e-10)
    pixelwise = metric_heldout.pooled_scale(records, "pixel_scale")
    assert pixelwise == pytest.approx((frames.mean() / 2, frames.std() / 2), rel=1e-10)


def test_report_summarises_each_run_over_its_drives(metric_heldout):
    records = [
        _record("ms", 2, np.array([0.9, 1.0, 1.1]), np.array([0.98, 1.0, 1.02])),  # std 0.0816: above 0.05
        _record("ms", 3, np.array([0.97, 0.99, 1.01]), np.array([0.99, 1.0, 1.01])),  # mean 0.99, std 0.0163
        _record("velocity", 2, np.array([1.0, 1.0])),  # an older record: no pixelwise ratio
    ]
    table = metric_heldout.report(records)
    ratio_summary, pixelwise_summary = table.split("median(gt)/median(pred)")[1].split("median(gt/pred)")
    ratio_rows = {line.split(" | ")[0]: line for line in ratio_summary.splitlines()[2:]}
    assert "| 1 of 2 | 0.990-1.000 | 0.9950 |" in ratio_rows["| ms"]  # pooled: (3 x 1.0 + 3 x 0.99) / 6
    assert ratio_rows["| velocity"].endswith("| 1 of 1 | 1.000-1.000 | 1.0000 | 0.0000 |")
    pixelwise_rows = pixelwise_summary.splitlines()[2:]
    assert len(pixelwise_rows) == 1 and "| 2 of 2 | 1.000-1.000 | 1.0000 |" in pixelwise_rows[0]
    assert "| velocity | 2 | 2 | 1.0000 | 0.0000 | - | - |" in table
    records[0].update(scale_shape_std=0.071, ratio_gap_median=0.04)
    (row,) = (
        line for line in metric_heldout.report(records).splitlines() if line.startswith("| ms | 2 | 3 |")
    )
    assert row.endswith("| 0.0710 | 0.0400 |")
