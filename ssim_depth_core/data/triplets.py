"""Training samples: a target frame and its temporal neighbours, resized, augmented, with multi-scale K.

One sample (no batch dimension) is a dict following the training data contract:
``images`` / ``images_aug`` (F, 3, H, W) float32 in [0, 1] (frame f is ``frame_ids[f]``; with
``data.stereo`` one more, the stereo partner's frame taken with the target, last: F + 1 images), ``K`` /
``inv_K`` (NUM_SCALES, 3, 3) for an image of W / 2**s x H / 2**s, ``travel`` (F - 1,) float32 metres
travelled between the target and each source of ``frame_ids[1:]`` (NaN: unknown), ``stereo_T`` (4, 4)
float32 target camera -> partner camera (with ``data.stereo`` only), ``depth_gt`` (1, H, W) metres when the
dataset loads ground truth (``load_depth_gt``) and the source has it, and ``index``. Augmentation is a pure
function of (seed, epoch, index), so runs reproduce. An unreadable sample is a :class:`SkippedSample`: its
source, reason and error message, which :func:`collate_skipping` passes on and :class:`SkipTally` counts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset, default_collate

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig, check_frame_ids
from ssim_depth_core.data.kitti_raw import SIDE_TO_CAMERA, kitti_sequence_name, read_split
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.imaging import FrameError, resize_image

logger = logging.getLogger(__name__)

NUM_SCALES = 4  # K / inv_K for scales 0..3, as the depth decoder's outputs
GAP_WINDOW = 16  # stamp intervals whose median is a frame's period when a bag's triplets are checked for gaps


def build_samples(
    sequences: Sequence[FrameSequence], frame_ids: Sequence[int], split: str | Path | None = None
) -> list[tuple[int, int]]:
    """(sequence index, target frame) pairs whose neighbours ``frame_ids`` all exist.

    Without ``split`` every such frame of every sequence; with a split file (``<date>/<drive> <frame> l|r``)
    its entries, matched to KITTI sequences by drive and camera. Entries too close to a sequence end for
    ``frame_ids`` are dropped with a warning; a drive that is not loaded is an error. Triplets spanning a gap
    in a bag's stamps are dropped too (:func:`_drop_across_gaps`).
    """
    low, high = min(frame_ids), max(frame_ids)
    if split is None:
        samples = [(s, f) for s, seq in enumerate(sequences) for f in range(-low, len(seq) - high)]
        return _drop_across_gaps(sequences, samples, frame_ids)
    by_name = {seq.name: s for s, seq in enumerate(sequences)}
    entries = _split_entries(split)
    missing = missing_split_sequences(sequences, entries)
    if missing:
        raise ValueError(f"{split}: {missing[0]} is not among the {len(sequences)} loaded sequences")
    samples, dropped, outside = [], 0, []
    for drive, frame, _, name in entries:
        s = by_name[name]
        if not 0 <= frame < len(sequences[s]):
            outside.append(f"{drive} {frame} ({len(sequences[s])} frames)")
        elif frame + low < 0 or frame + high >= len(sequences[s]):
            dropped += 1
        else:
            samples.append((s, frame))
    if dropped:
        logger.warning("%s: dropped %d entries without neighbours %s", split, dropped, list(frame_ids))
    if outside:
        logger.warning(
            "%s: dropped %d entries beyond their drive's frames (first: %s)", split, len(outside), outside[0]
        )
    return _drop_across_gaps(sequences, samples, frame_ids)


def missing_split_sequences(
    sequences: Sequence[FrameSequence], split: str | Path | list[tuple[str, int, str, str]]
) -> list[str]:
    """The sequences that the entries of split file ``split`` (or its :func:`_split_entries`) name and
    ``sequences`` lacks, as "drive D camera C (sequence name)", in order of first mention."""
    entries = _split_entries(split) if isinstance(split, str | Path) else split
    present = {seq.name for seq in sequences}
    missing = {name: f"drive {drive} camera {camera} ({name})" for drive, _, camera, name in entries}
    return [described for name, described in missing.items() if name not in present]


def _split_entries(split: str | Path) -> list[tuple[str, int, str, str]]:
    """(drive, frame, camera, sequence name) of each entry of split file ``split``."""
    entries = []
    for drive, frame, side in read_split(split):
        camera = SIDE_TO_CAMERA[side]
        entries.append((drive, frame, camera, kitti_sequence_name(drive, camera)))
    return entries


def _drop_across_gaps(
    sequences: Sequence[FrameSequence], samples: list[tuple[int, int]], frame_ids: Sequence[int]
) -> list[tuple[int, int]]:
    """``samples`` without the triplets that span a gap in their sequence's stamps; one warning per sequence.

    Where frames are indexed by stamp (``FrameSequence.frames_by_stamp``: a bag, whose undecodable messages,
    damaged chunks and repeated stamps leave no index), a source ``offset`` frames from its target must be
    stamped within half a period of ``target + offset x P``, P the median frame period around the target
    (:func:`local_frame_periods`: a camera that changes its rate keeps both stretches); else frames were lost
    between them or the recording paused, and the pair would be two or more periods apart.
    """
    offsets = np.array([offset for offset in frame_ids if offset != 0], dtype=np.int64)
    targets: dict[int, list[int]] = {}
    for s, frame in samples:
        targets.setdefault(s, []).append(frame)
    across: set[tuple[int, int]] = set()
    for s, frames in targets.items():
        sequence = sequences[s]
        if not (sequence.frames_by_stamp and len(offsets) and len(sequence) > 1):
            continue
        stamps = np.asarray(sequence.timestamps, dtype=np.float64)
        target = np.asarray(frames, dtype=np.int64)
        period = local_frame_periods(stamps)[target]
        error = stamps[target[:, None] + offsets] - stamps[target][:, None] - offsets * period[:, None]
        gaps = np.flatnonzero(np.abs(error).max(axis=1) > period / 2)
        if len(gaps):
            first = gaps[0]
            logger.warning(
                "%s: dropped %d of %d samples spanning a gap in the stamps (a source of %s stamped more "
                "than half the median frame period around its target off target + offset x period: frames "
                "lost or a pause in the recording; first: target frame %d at %.6f s, period there %.1f ms)",
                sequence.name,
                len(gaps),
                len(target),
                offsets.tolist(),
                target[first],
                stamps[target[first]],
                period[first] * 1e3,
            )
            across.update((s, int(frame)) for frame in target[gaps])
    return [sample for sample in samples if sample not in across]


def local_frame_periods(stamps: np.ndarray, window: int = GAP_WINDOW) -> np.ndarray:
    """Each frame's median frame period over the ``window`` stamp intervals around it (all of them when
    there are fewer): robust to a few lost frames or a pause, and following a change of frame rate.

    Args:
        stamps: (N,) increasing frame stamps, N >= 2.

    Returns:
        (N,) periods in the stamps' unit.
    """
    intervals = np.diff(stamps)
    window = min(window, len(intervals))
    medians = np.median(np.lib.stride_tricks.sliding_window_view(intervals, window), axis=1)
    first_interval = np.clip(np.arange(len(stamps)) - window // 2, 0, len(intervals) - window)
    return medians[first_interval]


def filter_static(
    sequences: Sequence[FrameSequence],
    samples: Sequence[tuple[int, int]],
    frame_ids: Sequence[int],
    threshold: float,
    size: tuple[int, int],
) -> list[tuple[int, int]]:
    """Drop samples whose mean |target - source| (RGB in [0, 1] at ``size`` = (width, height), averaged over
    the sources) is below ``threshold``: a parked camera teaches nothing about depth. Unreadable samples are
    dropped too. The order of ``samples`` is kept."""
    sources = [offset for offset in frame_ids if offset != 0]

    @lru_cache(maxsize=4 * len(frame_ids))
    def thumbnail(s: int, f: int) -> np.ndarray:
        return resize_image(sequences[s].image(f), *size).astype(np.float32) / 255.0

    keep, static, unreadable = {}, 0, 0
    for s, f in sorted(set(samples)):  # frame order, so the cache decodes each frame once
        try:
            target = thumbnail(s, f)
            motion = np.mean([np.abs(thumbnail(s, f + o) - target).mean() for o in sources])
        except FrameError as err:
            logger.warning("static filter: dropping %s frame %d: %s", sequences[s].name, f, err)
            unreadable += 1
            keep[s, f] = False
            continue
        keep[s, f] = motion >= threshold
        static += not keep[s, f]
    kept = [sample for sample in samples if keep[sample]]
    logger.info(
        "static filter (threshold %g): kept %d of %d samples, dropped %d static and %d unreadable",
        threshold,
        len(kept),
        len(samples),
        static,
        unreadable,
    )
    return kept


def flip_intrinsics(intrinsics: Intrinsics) -> Intrinsics:
    """Intrinsics of the horizontally mirrored image: pixel u maps to width - 1 - u."""
    return dataclasses.replace(intrinsics, cx=intrinsics.width - 1 - intrinsics.cx)


# Mirroring the images mirrors the world seen through them: camera coordinates x -> -x.
_MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])


def flip_transform(transform: np.ndarray) -> np.ndarray:
    """A camera-to-camera transform of the mirrored rig: (4, 4) ``T`` -> ``M T M``, ``M = diag(-1, 1, 1, 1)``.

    A point ``p`` of the mirrored images is ``M q`` for a point ``q`` of the originals, so the partner sees it
    at ``M T q = M T M p``. The x translation changes sign (the partner moves to the other side), as do the
    rotation entries that couple x with y or z.
    """
    return _MIRROR @ transform @ _MIRROR


def sample_jitter(config: DataConfig, generator: torch.Generator) -> dict[str, Any]:
    """Colour-jitter factors (brightness/contrast/saturation in [1 - r, 1 + r], hue in [-h, h]), op order."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    return {
        "brightness": uniform(max(0.0, 1 - config.brightness), 1 + config.brightness),
        "contrast": uniform(max(0.0, 1 - config.contrast), 1 + config.contrast),
        "saturation": uniform(max(0.0, 1 - config.saturation), 1 + config.saturation),
        "hue": uniform(-config.hue, config.hue),
        "order": torch.randperm(4, generator=generator).tolist(),
    }


def apply_jitter(images: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> jittered copy; the same factors for every image of the batch."""
    ops = [
        lambda x: TF.adjust_brightness(x, params["brightness"]),
        lambda x: TF.adjust_contrast(x, params["contrast"]),
        lambda x: TF.adjust_saturation(x, params["saturation"]),
        lambda x: TF.adjust_hue(x, params["hue"]),
    ]
    for op in params["order"]:
        images = ops[op](images)
    return images


class FrameSizeError(FrameError):
    """A frame whose size is not the one the sequence's intrinsics are for."""


class SkippedSample(NamedTuple):
    """A sample that could not be read: its sequence, the kind of failure and the error message."""

    source: str
    reason: str
    message: str


class SkipTally:
    """Skipped samples counted by source and reason, with the first message of each: one log line."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.first: dict[tuple[str, str], str] = {}

    def add(self, skips: Iterable[SkippedSample]) -> None:
        for skip in skips:
            self.counts[skip.source, skip.reason] += 1
            self.first.setdefault((skip.source, skip.reason), skip.message)

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``N x source: reason (first: message)`` for each source and reason, the most frequent first."""
        return "; ".join(
            f"{count} x {source}: {reason} (first: {self.first[source, reason]})"
            for (source, reason), count in self.counts.most_common()
        )


class TripletDataset(Dataset):
    """``samples[i] = (sequence index, target frame)`` -> one training sample dict, or a
    :class:`SkippedSample` if unreadable (logged as a warning the first time for each sequence and reason).

    Train mode flips (all frames, depth, cx and the stereo rig) with ``flip_probability`` and colour-jitters
    the network inputs ``images_aug`` with ``jitter_probability``; eval mode does neither. With
    ``data.stereo`` every sequence the samples use must have a stereo partner camera. ``load_depth_gt``
    False skips the ground truth (no ``depth_gt``; on KITTI without ``proj_depth`` that saves a velodyne
    projection per sample): the trainer loads it for validation, and for training only when a weighted loss
    term reads it (``losses.objective.required_inputs``). Use with :func:`collate_skipping`.
    """

    def __init__(
        self,
        sequences: Sequence[FrameSequence],
        samples: Sequence[tuple[int, int]],
        data_config: DataConfig,
        train: bool = True,
        seed: int = 0,
        load_depth_gt: bool = True,
    ) -> None:
        self.sequences = list(sequences)
        self.config = data_config
        self.train = train
        self.load_depth_gt = load_depth_gt
        self.seed = seed
        self.epoch = 0
        self.frame_ids = check_frame_ids(data_config.frame_ids, stereo=data_config.stereo)
        divisor = 2 ** (NUM_SCALES - 1)
        if data_config.height % divisor or data_config.width % divisor:
            raise ValueError(
                f"data.height and data.width must be multiples of {divisor}, "
                f"got {data_config.height}x{data_config.width}"
            )
        self.samples = list(samples)
        if data_config.stereo:
            used = {s for s, _ in self.samples}
            unpaired = sorted(
                self.sequences[s].name for s in used if self.sequences[s].stereo_transform is None
            )
            if unpaired:
                raise ValueError(
                    f"data.stereo is on but sequence(s) {', '.join(unpaired)} have no stereo partner camera "
                    "(stereo_transform is None): train on stereo recordings or set data.stereo=false"
                )
        # (sequence, frame, partner?) -> resized RGB
        self._frames: dict[tuple[int, int, bool], np.ndarray] = {}
        self._warned: set[tuple[str, str]] = set()  # (source, reason) of the skips logged as warnings
        if data_config.static_threshold > 0:
            if len(self.frame_ids) == 1:
                raise ValueError(
                    f"data.static_threshold={data_config.static_threshold} drops frames without temporal "
                    "motion, but frame_ids [0] (stereo only) have no temporal source: set it to 0"
                )
            size = (data_config.width // 4, data_config.height // 4)
            self.samples = filter_static(
                self.sequences, self.samples, self.frame_ids, data_config.static_threshold, size
            )

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` for integer keys (in this process only: through a
        DataLoader with workers, pass ``(epoch, index)`` keys instead)."""
        self.epoch = epoch

    def travel(self, index: int) -> np.ndarray:
        """(F - 1,) float32 metres travelled from sample ``index``'s target to each source of
        ``frame_ids[1:]``, NaN where the sequence has no odometry."""
        s, frame = self.samples[index]
        travel = [self.sequences[s].travel(frame, frame + offset) for offset in self.frame_ids[1:]]
        return np.asarray(travel, dtype=np.float32)

    def _generator(self, epoch: int, index: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def _frame(self, s: int, index: int, partner: bool = False) -> np.ndarray:
        """Frame ``index`` of sequence ``s`` (or of its stereo partner) at the network size, decoded once when
        ``data.cache_frames``."""
        key = (s, index, partner)
        if key in self._frames:
            return self._frames[key]
        sequence = self.sequences[s]
        native = sequence.intrinsics
        image = sequence.stereo_image(index) if partner else sequence.image(index)
        if image.shape[:2] != (native.height, native.width):
            camera = "stereo partner frame" if partner else "frame"
            raise FrameSizeError(
                f"{sequence.name} {camera} {index}: image is {image.shape[1]}x{image.shape[0]} "
                f"but the intrinsics are for {native.width}x{native.height}"
            )
        image = resize_image(image, self.config.width, self.config.height)
        if self.config.cache_frames:
            self._frames[key] = image
        return image

    def _skip(self, index: int, frame: int, part: str, err: FrameError) -> SkippedSample:
        """The skip record of sample ``index``; a warning for the first of its source and reason."""
        source = self.sequences[self.samples[index][0]].name
        reason = (
            f"{part} size is not the calibrated one"
            if isinstance(err, FrameSizeError)
            else f"unreadable {part}"
        )
        first = (source, reason) not in self._warned
        self._warned.add((source, reason))
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "skipping sample %d (%s frame %d): %s%s",
            index,
            source,
            frame,
            err,
            " (the next ones of this kind are counted, not logged)" if first else "",
        )
        return SkippedSample(source, reason, str(err))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        """Sample ``key``: an index (augmented as drawn for :meth:`set_epoch`'s epoch) or ``(epoch, index)``,
        which a sampler passes because DataLoader workers hold their own copy of the dataset."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        s, frame = self.samples[index]
        sequence = self.sequences[s]
        width, height = self.config.width, self.config.height
        native = sequence.intrinsics
        part = "frame"
        try:
            frames = [self._frame(s, frame + offset) for offset in self.frame_ids]
            if self.config.stereo:
                part = "stereo partner frame"
                frames.append(self._frame(s, frame, partner=True))
            part = "ground truth"
            depth = sequence.depth(frame) if self.load_depth_gt else None
        except FrameError as err:
            return self._skip(index, frame, part, err)

        generator = self._generator(epoch, index)
        flip = self.train and float(torch.rand((), generator=generator)) < self.config.flip_probability
        jitter = self.train and float(torch.rand((), generator=generator)) < self.config.jitter_probability

        images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        if flip:
            images = images.flip(-1)
        images_aug = apply_jitter(images, sample_jitter(self.config, generator)) if jitter else images

        scaled = [native.scaled(width // 2**k, height // 2**k) for k in range(NUM_SCALES)]
        if flip:
            scaled = [flip_intrinsics(k) for k in scaled]
        sample = {
            "images": images,
            "images_aug": images_aug,
            "K": torch.stack([k.K() for k in scaled]),
            "inv_K": torch.stack([k.inv_K() for k in scaled]),
            "travel": torch.from_numpy(self.travel(index)),
            "index": index,
        }
        if self.config.stereo:
            stereo_T = np.asarray(sequence.stereo_transform, dtype=np.float64)
            sample["stereo_T"] = torch.from_numpy(flip_transform(stereo_T) if flip else stereo_T).float()
        if depth is not None:
            depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
            depth_gt = torch.from_numpy(depth)[None]
            sample["depth_gt"] = depth_gt.flip(-1) if flip else depth_gt
        return sample


def collate_skipping(batch: list[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Collate the readable samples, adding ``"skipped"``: the list of :class:`SkippedSample` (only that key
    when every sample was skipped).

    Samples without ``depth_gt`` get an all-zero (invalid) map when others in the batch have one (KITTI has
    no ground truth for the first and last frames of a drive).
    """
    kept = [sample for sample in batch if not isinstance(sample, SkippedSample)]
    skipped = [sample for sample in batch if isinstance(sample, SkippedSample)]
    if not kept:
        return {"skipped": skipped}
    with_depth = [sample["depth_gt"] for sample in kept if "depth_gt" in sample]
    if with_depth and len(with_depth) < len(kept):
        kept = [
            sample if "depth_gt" in sample else {**sample, "depth_gt": torch.zeros_like(with_depth[0])}
            for sample in kept
        ]
    collated = default_collate(kept)
    collated["skipped"] = skipped
    return collated
