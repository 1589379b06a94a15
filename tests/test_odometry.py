"""Odometry -> odometer helpers against hand-computed path lengths, integrals and interpolations."""

from __future__ import annotations

import numpy as np
import pytest

from ssim_depth_core.data.odometry import (
    DEFAULT_MAX_GAP_S,
    odometer_at,
    odometer_from_positions,
    odometer_from_speeds,
)

NAN = np.nan


def test_odometer_from_positions_is_the_cumulative_path_length():
    # steps: (3, 4, 0) -> 5, (0, 0, 12) -> 12, back to the start: 13 (a 5-12-13 triangle), then standing still
    positions = [[0, 0, 0], [3, 4, 0], [3, 4, 12], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose(odometer_from_positions(positions), [0, 5, 17, 30, 30], rtol=0, atol=1e-12)
    assert odometer_from_positions([[1.0, 2.0, 3.0]]).tolist() == [0.0]
    with pytest.raises(ValueError, match=r"positions must be \(M, 3\), got \(2, 2\)"):
        odometer_from_positions([[0, 0], [1, 1]])


def test_odometer_from_speeds_integrates_by_trapezoids():
    # [0, 1]: (2 + 4) / 2 * 1 = 3; [1, 3]: (4 + 0) / 2 * 2 = 4; [3, 3.5]: (0 + 6) / 2 * 0.5 = 1.5
    odometer = odometer_from_speeds([10.0, 11.0, 13.0, 13.5], [2.0, 4.0, 0.0, 6.0])
    np.testing.assert_allclose(odometer, [0, 3, 7, 8.5], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        odometer_from_speeds([0.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"stamps \(3,\) and speeds \(2,\) must be matching"):
        odometer_from_speeds([0.0, 1.0, 2.0], [1.0, 1.0])


def test_odometer_at_interpolates_inside_and_refuses_gaps_and_outside():
    samples = [0.0, 0.1, 0.2, 1.0, 1.1]
    readings = [0.0, 1.0, 3.0, 4.0, 6.0]
    frames = [-0.1, 0.0, 0.05, 0.15, 0.2, 0.5, 1.0, 1.05, 1.1, 1.2]
    expected = [
        NAN,  # before the first sample
        0.0,  # on a sample
        0.5,  # halfway between 0 and 1
        2.0,  # halfway between 1 and 3
        3.0,  # on the last sample before the gap
        NAN,  # inside the 0.8 s gap (> 0.5 s)
        4.0,  # on the first sample after the gap: no bracketing needed
        5.0,
        6.0,  # on the last sample
        NAN,  # after the last sample
    ]
    np.testing.assert_allclose(odometer_at(frames, samples, readings), expected, rtol=0, atol=1e-12)
    assert DEFAULT_MAX_GAP_S == 0.5
    # a tighter max_gap refuses the 0.1 s spacing too, but keeps frames that sit on a sample
    tight = odometer_at([0.0, 0.05, 0.1, 1.05], samples, readings, max_gap=0.05)
    np.testing.assert_allclose(tight, [0.0, NAN, 1.0, NAN], rtol=0, atol=1e-12)
    # a looser one bridges the gap: 0.5 is 3/8 of the way from 0.2 (3 m) to 1.0 (4 m)
    assert odometer_at([0.5], samples, readings, max_gap=1.0)[0] == pytest.approx(3.375, abs=1e-12)


def test_odometer_at_edge_cases():
    assert np.isnan(odometer_at([0.0, 1.0], [], [])).all()
    np.testing.assert_allclose(odometer_at([0.5, 0.6], [0.5], [7.0]), [7.0, NAN])  # a single sample
    with pytest.raises(ValueError, match="strictly increasing"):
        odometer_at([0.0], [0.0, 0.2, 0.1], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"sample stamps \(2,\) and odometer \(3,\) must be matching"):
        odometer_at([0.0], [0.0, 0.1], [0.0, 1.0, 2.0])
