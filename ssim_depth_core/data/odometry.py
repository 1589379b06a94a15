"""Odometry -> an odometer (metres travelled) at each image stamp, the quantity velocity supervision needs.

Every odometry source reduces to samples ``(stamp, odometer)``: positions (GNSS/INS, nav_msgs/Odometry, /tf)
by the cumulative length of the path between consecutive positions, velocities (OXTS, Twist) by integrating
the speed over time (trapezoids). :func:`odometer_at` then interpolates linearly to the image stamps; a frame
outside the samples' time span, or between two samples further apart than ``max_gap`` seconds, gets NaN (no
odometry: no velocity term for it).
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_GAP_S = 0.5  # samples further apart than this do not bracket a frame (a dropout, not a motion)


def odometer_from_positions(positions: np.ndarray) -> np.ndarray:
    """(M, 3) positions in metres -> (M,) cumulative path length, 0 at the first sample."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be (M, 3), got {positions.shape}")
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def odometer_from_speeds(stamps: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    """(M,) stamps in seconds (increasing) and (M,) speeds in m/s -> (M,) distance travelled since the first
    sample (trapezoidal integration)."""
    stamps = np.asarray(stamps, dtype=np.float64)
    speeds = np.asarray(speeds, dtype=np.float64)
    if stamps.shape != speeds.shape or stamps.ndim != 1:
        raise ValueError(f"stamps {stamps.shape} and speeds {speeds.shape} must be matching (M,) arrays")
    if np.any(np.diff(stamps) <= 0):
        raise ValueError("odometry stamps must be strictly increasing")
    steps = 0.5 * (speeds[1:] + speeds[:-1]) * np.diff(stamps)
    return np.concatenate([[0.0], np.cumsum(steps)])


def odometer_at(
    frame_stamps: np.ndarray,
    sample_stamps: np.ndarray,
    odometer: np.ndarray,
    max_gap: float = DEFAULT_MAX_GAP_S,
) -> np.ndarray:
    """Odometer readings (M,) at ``sample_stamps`` (M,) interpolated linearly to ``frame_stamps`` (N,).

    NaN for a frame before the first or after the last sample, or whose bracketing samples are more than
    ``max_gap`` seconds apart. Sample stamps must be strictly increasing.
    """
    frame_stamps = np.asarray(frame_stamps, dtype=np.float64)
    sample_stamps = np.asarray(sample_stamps, dtype=np.float64)
    odometer = np.asarray(odometer, dtype=np.float64)
    if sample_stamps.shape != odometer.shape or sample_stamps.ndim != 1:
        raise ValueError(
            f"sample stamps {sample_stamps.shape} and odometer {odometer.shape} must be matching (M,) arrays"
        )
    result = np.full(frame_stamps.shape, np.nan)
    if len(sample_stamps) == 0:
        return result
    if np.any(np.diff(sample_stamps) <= 0):
        raise ValueError("odometry stamps must be strictly increasing")
    upper = np.searchsorted(sample_stamps, frame_stamps, side="left").clip(0, len(sample_stamps) - 1)
    lower = np.where(sample_stamps[upper] == frame_stamps, upper, (upper - 1).clip(0))
    inside = (frame_stamps >= sample_stamps[0]) & (frame_stamps <= sample_stamps[-1])
    bracketed = inside & (sample_stamps[upper] - sample_stamps[lower] <= max_gap)
    result[bracketed] = np.interp(frame_stamps[bracketed], sample_stamps, odometer)
    return result
