"""Depth evaluation against ground truth: Eigen et al. (2014) error metrics, the Garg crop, median scaling.

The KITTI protocol computes the metrics per image on its valid ground-truth pixels and averages them over
images (:class:`MetricsAccumulator`). A scale-less monocular model's depth is only defined up to scale, so
its prediction is multiplied by the per-image scale ratio median(gt) / median(pred) over the valid pixels
before comparison (median scaling); a metric model is compared as it is. The ratio is measured either way:
its mean and spread over images say how far off and how consistent a model's scale is (1 and 0 for a perfect
metric model). Beside it the pixelwise ratio median(gt / pred): the ratio of medians also moves when the
prediction is noisy pixel by pixel and the image's depths are not spread evenly around their median (the
noise then shifts the prediction's median, not the depths' typical scale), which the median of the ratios
does not; docs/training.md measures how far apart the two are on trained models.

By range (:class:`RangeAccumulator`): the same comparison split by ground-truth depth, for a robot the
question of how near obstacles read: per range bin the share of the pixels, AbsRel over them and the
typical per-image median(gt / pred) there (above 1: read too near; below 1: too far).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

RANGE_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)  # metres: the bins of RangeAccumulator's default

# Garg et al. (2016) crop of the KITTI Eigen split, as fractions of (height, height, width, width).
_GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
_DELTA = 1.25


def compute_depth_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Eigen et al. error and accuracy metrics between matched depths.

    Args:
        gt: (N,) or any shape of positive ground-truth depths (only valid pixels).
        pred: predicted depths, same shape, positive.

    Returns:
        dict with abs_rel = mean(|gt - pred| / gt), sq_rel = mean((gt - pred)^2 / gt),
        rmse = sqrt(mean((gt - pred)^2)), rmse_log = sqrt(mean((ln gt - ln pred)^2)) and
        a1/a2/a3 = fraction of pixels with max(gt / pred, pred / gt) < 1.25, 1.25^2, 1.25^3.
    """
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of values, got {gt.size} and {pred.size}")
    if gt.size == 0:
        raise ValueError("no pixels to evaluate (gt is empty)")
    if np.any(~(gt > 0)) or np.any(~(pred > 0)):
        raise ValueError("gt and pred depths must all be > 0 (found a value <= 0 or NaN)")

    diff = gt - pred
    ratio = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(ratio < _DELTA)),
        "a2": float(np.mean(ratio < _DELTA**2)),
        "a3": float(np.mean(ratio < _DELTA**3)),
    }


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """(H, W) bool mask, True inside the Garg crop: rows [0.408 H, 0.992 H), cols [0.036 W, 0.964 W)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    top, bottom = int(_GARG_CROP[0] * height), int(_GARG_CROP[1] * height)
    left, right = int(_GARG_CROP[2] * width), int(_GARG_CROP[3] * width)
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def evaluate_depth(
    gt_depth: np.ndarray,
    pred_depth: np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    crop: str | None = "garg",
    median_scaling: bool = True,
) -> tuple[dict[str, float], float]:
    """Metrics of one predicted depth map against its ground truth.

    Args:
        gt_depth: (H, W) ground-truth depth in metres; pixels outside (min_depth, max_depth) are ignored
            (0 or NaN = no measurement).
        pred_depth: (H, W) predicted depth, already resized to the ground-truth resolution by the caller.
        crop: "garg" to evaluate only inside :func:`garg_crop_mask`, None for the whole image.
        median_scaling: multiply the prediction by the scale ratio before comparison; False compares the
            prediction as it is (a metric model).

    Returns:
        (metrics dict as :func:`compute_depth_metrics`, the scale ratio median(gt) / median(pred) over the
        valid pixels, applied or not). The prediction is clamped to [min_depth, max_depth] after scaling.
    """
    gt, pred, ratio = _valid_depths(gt_depth, pred_depth, min_depth, max_depth, crop)
    return _clamped_metrics(gt, pred * ratio if median_scaling else pred, min_depth, max_depth), ratio


class DepthScores(NamedTuple):
    """One image's metrics with and without median scaling (:func:`evaluate_depth_scalings`)."""

    median: dict[str, float]  # median-scaled, as evaluate_depth(...)[0]
    metric: (
        dict[str, float] | None
    )  # unscaled, as evaluate_depth(..., median_scaling=False)[0]; None: not asked
    ratio: float  # median(gt) / median(pred) over the valid pixels
    pixel_ratio: float  # median(gt / pred) over the valid pixels
    gt: np.ndarray  # (N,) float64: the valid ground-truth pixels
    pred: np.ndarray  # (N,) float64: the prediction on them, unscaled and unclamped


def evaluate_depth_scalings(
    gt_depth: np.ndarray,
    pred_depth: np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    crop: str | None = "garg",
    unscaled: bool = True,
) -> DepthScores:
    """The median-scaled metrics and (with ``unscaled``) the unscaled ones of one depth map, from one pass.

    Arguments and errors as :func:`evaluate_depth`, whose two scalings this returns: the ground truth is
    masked, the prediction checked and the scale ratio measured once.
    """
    gt, pred, ratio = _valid_depths(gt_depth, pred_depth, min_depth, max_depth, crop)
    median = _clamped_metrics(gt, pred * ratio, min_depth, max_depth)
    metric = _clamped_metrics(gt, pred, min_depth, max_depth) if unscaled else None
    # a pixel predicted at 0 depth gives an infinite ratio, which the median outvotes
    with np.errstate(divide="ignore"):
        pixel_ratio = float(np.median(gt / pred))
    return DepthScores(median, metric, ratio, pixel_ratio, gt, pred)


def scale_ratio(
    gt_depth: np.ndarray,
    pred_depth: np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    crop: str | None = "garg",
) -> float:
    """The scale ratio median(gt) / median(pred) over the valid pixels, the factor median scaling applies
    (arguments and errors as :func:`evaluate_depth`, which returns it beside the metrics)."""
    return _valid_depths(gt_depth, pred_depth, min_depth, max_depth, crop)[2]


def _clamped_metrics(
    gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float
) -> dict[str, float]:
    return compute_depth_metrics(gt, np.clip(pred, min_depth, max_depth))


def valid_mask(
    gt_depth: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0, crop: str | None = "garg"
) -> np.ndarray:
    """(H, W) bool: the pixels :func:`evaluate_depth` compares with the same arguments (ground truth inside
    (min_depth, max_depth) and, with ``crop`` "garg", inside the Garg crop)."""
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")
    valid = (gt_depth > min_depth) & (gt_depth < max_depth)
    if crop == "garg":
        valid &= garg_crop_mask(*gt_depth.shape)
    elif crop is not None:
        raise ValueError(f"unknown crop {crop!r}, expected 'garg' or None")
    return valid


def _valid_depths(
    gt_depth: np.ndarray, pred_depth: np.ndarray, min_depth: float, max_depth: float, crop: str | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(gt, pred) on the valid ground-truth pixels (float64) and the ratio median(gt) / median(pred) there;
    raises ValueError (see :func:`evaluate_depth`)."""
    gt_depth = np.asarray(gt_depth, dtype=np.float64)
    pred_depth = np.asarray(pred_depth, dtype=np.float64)
    if gt_depth.ndim != 2:
        raise ValueError(f"gt_depth must be a (H, W) map, got shape {gt_depth.shape}")
    if pred_depth.shape != gt_depth.shape:
        raise ValueError(
            f"pred_depth shape {pred_depth.shape} != gt_depth shape {gt_depth.shape}: "
            "resize the prediction to the ground-truth resolution first"
        )
    valid = valid_mask(gt_depth, min_depth, max_depth, crop)
    if not valid.any():
        raise ValueError(
            f"no valid ground-truth pixels (gt in ({min_depth}, {max_depth}) m"
            + (" inside the Garg crop)" if crop else ")")
        )

    gt, pred = gt_depth[valid], pred_depth[valid]
    bad = np.count_nonzero(~np.isfinite(pred))
    if bad:
        raise ValueError(f"pred_depth has {bad} non-finite values on valid ground-truth pixels")
    pred_median = float(np.median(pred))
    if pred_median <= 0:
        raise ValueError(f"median predicted depth on valid pixels is {pred_median}: no scale ratio")
    return gt, pred, float(np.median(gt)) / pred_median


class MetricsAccumulator:
    """Per-image metrics averaged over images (the KITTI protocol), plus per-image scale ratio statistics."""

    def __init__(self) -> None:
        self._metrics: list[dict[str, float]] = []
        self._ratios: list[float] = []
        self._pixel_ratios: list[float] = []

    def __len__(self) -> int:
        return len(self._metrics)

    def add(
        self,
        metrics: dict[str, float],
        scale_ratio: float | None = None,
        pixel_scale_ratio: float | None = None,
    ) -> None:
        """Record one image's metrics (as returned by :func:`evaluate_depth`) and its scale ratios
        (:class:`DepthScores`' ``ratio`` and ``pixel_ratio``)."""
        missing = [name for name in METRIC_NAMES if name not in metrics]
        if missing:
            raise ValueError(f"metrics dict is missing {missing}, expected keys {list(METRIC_NAMES)}")
        self._metrics.append({name: float(metrics[name]) for name in METRIC_NAMES})
        if scale_ratio is not None:
            self._ratios.append(float(scale_ratio))
        if pixel_scale_ratio is not None:
            self._pixel_ratios.append(float(pixel_scale_ratio))

    def mean(self) -> dict[str, float]:
        """Mean of each metric over the images added so far."""
        if not self._metrics:
            raise ValueError("no images were added to the accumulator")
        return {name: float(np.mean([m[name] for m in self._metrics])) for name in METRIC_NAMES}

    def scale_stats(self, pixelwise: bool = False) -> dict[str, float]:
        """Mean, standard deviation and median of the per-image scale ratios median(gt) / median(pred), or
        with ``pixelwise`` of median(gt / pred)."""
        ratios = np.asarray(self._pixel_ratios if pixelwise else self._ratios)
        if not ratios.size:
            raise ValueError(
                f"no {'pixelwise ' if pixelwise else ''}scale ratios were added to the accumulator"
            )
        return {"mean": float(ratios.mean()), "std": float(ratios.std()), "median": float(np.median(ratios))}

    def scale_shape_std(self) -> float:
        """Standard deviation over images of median(gt) / median(pred) with each image first scaled by its own
        median(gt / pred): the spread of the ratio of medians that a scale exactly the same on every image
        would still show, the depth map's shape alone."""
        if not self._ratios or len(self._ratios) != len(self._pixel_ratios):
            raise ValueError(
                "scale_shape_std needs both scale ratios (scale_ratio, pixel_scale_ratio) of every image"
            )
        return float(np.std(np.divide(self._ratios, self._pixel_ratios)))


class RangeAccumulator:
    """Errors by ground-truth range over images: per bin [lo, hi) of ``edges`` (metres) the share of all valid
    pixels, AbsRel pooled over the bin's pixels, and the median over images of each image's median(gt / pred)
    in the bin (an image counts there with at least ``min_pixels`` pixels in it)."""

    def __init__(self, edges: Sequence[float] = RANGE_EDGES, min_pixels: int = 20) -> None:
        bounds = np.asarray(edges, dtype=np.float64)
        if bounds.ndim != 1 or bounds.size < 2 or not (bounds[0] >= 0 and np.all(np.diff(bounds) > 0)):
            raise ValueError(f"range edges must be >= 0 and increasing, at least two, got {list(edges)}")
        if min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
        self.edges, self.min_pixels = bounds, min_pixels
        self._pixels = np.zeros(bounds.size - 1, dtype=np.int64)
        self._abs_rel_sums = np.zeros(bounds.size - 1)
        self._ratios: list[list[float]] = [[] for _ in range(bounds.size - 1)]

    def add(
        self,
        gt_depth: np.ndarray,
        pred_depth: np.ndarray,
        median_scaling: bool,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
        crop: str | None = "garg",
    ) -> None:
        """Add one image, compared as :func:`evaluate_depth` compares it with the same arguments."""
        gt, pred, ratio = _valid_depths(gt_depth, pred_depth, min_depth, max_depth, crop)
        self.add_pixels(gt, pred * ratio if median_scaling else pred, min_depth, max_depth)

    def add_pixels(
        self, gt: np.ndarray, pred: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0
    ) -> None:
        """Add one image from its valid pixels, already matched (e.g. a :class:`DepthScores`' ``gt`` and
        ``pred``, the latter times its ``ratio`` for median scaling): ``gt`` (N,) inside (min_depth,
        max_depth), ``pred`` (N,) as compared; ``pred`` is clamped to [min_depth, max_depth] here."""
        gt = np.asarray(gt, dtype=np.float64)
        pred = np.clip(np.asarray(pred, dtype=np.float64), min_depth, max_depth)
        if gt.shape != pred.shape or gt.ndim != 1:
            raise ValueError(f"gt and pred must be matched (N,) pixels, got {gt.shape} and {pred.shape}")
        bins = np.digitize(gt, self.edges) - 1  # -1 and len(edges) - 1: outside every bin
        for index in range(self._pixels.size):
            inside = bins == index
            count = int(np.count_nonzero(inside))
            if not count:
                continue
            self._pixels[index] += count
            self._abs_rel_sums[index] += float(np.sum(np.abs(gt[inside] - pred[inside]) / gt[inside]))
            if count >= self.min_pixels:
                self._ratios[index].append(float(np.median(gt[inside] / pred[inside])))

    def summary(self) -> list[dict]:
        """Per bin: ``range_m`` [lo, hi], ``pixels`` and their ``pixel_share``, ``abs_rel`` and ``ratio``
        (None where the bin got no pixels, or no image with ``min_pixels``), and ``images``, how many images
        the ratio is over. Shares are 0 while no pixel fell in any bin."""
        total = int(self._pixels.sum())
        return [
            {
                "range_m": [float(self.edges[i]), float(self.edges[i + 1])],
                "pixels": int(count),
                "pixel_share": int(count) / total if total else 0.0,
                "abs_rel": float(self._abs_rel_sums[i] / count) if count else None,
                "ratio": float(np.median(ratios)) if ratios else None,
                "images": len(ratios),
            }
            for i, (count, ratios) in enumerate(zip(self._pixels, self._ratios, strict=True))
        ]
