"""The training objective: named loss terms, weighted by ``LossConfig.weights``.

A term is a function ``term(batch, outputs, objective) -> (scalar, images)`` registered in :data:`TERMS`
with :func:`register_term`; the objective computes every term whose configured weight is non-zero and sums
``weight * term``. New terms plug in by registering a function, without touching the training loop; a term
that needs something of the training data (odometry, for ``velocity``) registers a check of it with
:func:`register_data_check`, which the loop runs through :func:`check_training_data`. The loop
passes its step count, which terms read as ``objective.step`` for schedules (e.g. the auto-mask warm-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssim_depth_core.config import LossConfig, ModelConfig, check_frame_ids, source_slots
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error
from ssim_depth_core.losses.smoothness import edge_aware_smoothness
from ssim_depth_core.losses.ssim import SSIMLoss
from ssim_depth_core.losses.velocity import velocity_loss

log = logging.getLogger(__name__)

Batch = dict[str, Any]
Outputs = dict[str, Any]
Term = Callable[[Batch, Outputs, "Objective"], tuple[torch.Tensor, dict[str, torch.Tensor]]]

TERMS: dict[str, Term] = {}
# Optional model outputs a term reads besides the default contract (e.g. "source_depths"): the model computes
# them only when a term with a non-zero weight needs them (:func:`required_outputs`).
TERM_NEEDS: dict[str, tuple[str, ...]] = {}
# Optional batch entries a term reads besides the training data contract (e.g. "depth_gt"): the training data
# loads them only when a term with a non-zero weight needs them (:func:`required_inputs`).
TERM_INPUTS: dict[str, tuple[str, ...]] = {}
# Checks of the loss config run by every Objective (e.g. an option that only a given term reads).
CONFIG_CHECKS: list[Callable[[LossConfig], None]] = []
# Checks of the training data a term runs before training, by term name (:func:`check_training_data`).
DATA_CHECKS: dict[str, Callable[[Any, str], None]] = {}


def register_term(name: str, needs: Sequence[str] = (), inputs: Sequence[str] = ()) -> Callable[[Term], Term]:
    """Decorator registering a loss term under ``name`` (the key used in ``LossConfig.weights``); ``needs``
    names the optional model outputs it reads (``MonodepthModel``'s ``extra_outputs``), ``inputs`` the
    optional batch entries (``TripletDataset``'s ``depth_gt``)."""

    def add(term: Term) -> Term:
        if name in TERMS:
            raise ValueError(f"loss term '{name}' is already registered")
        TERMS[name] = term
        TERM_NEEDS[name] = tuple(needs)
        TERM_INPUTS[name] = tuple(inputs)
        return term

    return add


def register_config_check(check: Callable[[LossConfig], None]) -> Callable[[LossConfig], None]:
    """Decorator adding a loss-config check (raises ValueError) that every :class:`Objective` runs."""
    CONFIG_CHECKS.append(check)
    return check


def register_data_check(name: str) -> Callable[[Callable[[Any, str], None]], Callable[[Any, str], None]]:
    """Decorator registering term ``name``'s check of the training data, ``check(train_set, data_path)``
    (raises ValueError when the term cannot work on that data; may log what it reaches)."""

    def add(check: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
        DATA_CHECKS[name] = check
        return check

    return add


def check_training_data(loss_config: LossConfig, train_set: Any, data_path: str) -> None:
    """Run the data checks of the terms with a non-zero weight on ``train_set`` (a ``TripletDataset``)."""
    for name, weight in loss_config.weights.items():
        if weight != 0 and name in DATA_CHECKS:
            DATA_CHECKS[name](train_set, data_path)


def required_outputs(loss_config: LossConfig) -> tuple[str, ...]:
    """The optional model outputs the terms with a non-zero weight need, sorted (empty for the recipes)."""
    return _weighted_needs(loss_config, TERM_NEEDS)


def required_inputs(loss_config: LossConfig) -> tuple[str, ...]:
    """The optional batch entries the terms with a non-zero weight read, sorted: ``("depth_gt",)`` with the
    ``supervised`` term, else empty (the training data then skips loading ground truth)."""
    return _weighted_needs(loss_config, TERM_INPUTS)


def _weighted_needs(loss_config: LossConfig, registry: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    names = {need for name, w in loss_config.weights.items() if w != 0 for need in registry.get(name, ())}
    return tuple(sorted(names))


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar to back-propagate
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # detached, unweighted, for logging
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. "automask": (B, 1, H, W) float


class Objective(nn.Module):
    """Weighted sum of the named loss terms of ``loss_config.weights``.

    Args:
        loss_config: weights and options of the terms (SSIM form, alpha, min-reprojection, auto-masking).
        frame_ids: frame offsets of the batch, the target (0) first.
        scales: model output scales; scale index i has resolution ``input / 2**scales[i]``.
        seed: seed of the auto-mask tie-breaking noise (a generator per device, advanced every call).
        stereo: the stereo partner (key ``"s"``, the batch's last image) is a source too.
        depth_range: the model's ``(min_depth, max_depth)`` in metres, for terms that compare depths with
            ground truth (``supervised``).
    """

    def __init__(
        self,
        loss_config: LossConfig,
        frame_ids: Sequence[int],
        scales: Sequence[int],
        seed: int = 0,
        stereo: bool = False,
        depth_range: Sequence[float] = (ModelConfig.min_depth, ModelConfig.max_depth),
    ):
        super().__init__()
        unknown = sorted(set(loss_config.weights) - set(TERMS))
        if unknown:
            raise ValueError(
                f"loss.weights names unknown term(s) {', '.join(unknown)}; "
                f"known terms: {', '.join(sorted(TERMS))}"
            )
        self.weights = {name: float(w) for name, w in loss_config.weights.items() if w != 0}
        if not self.weights:
            raise ValueError(f"loss.weights gives no term a non-zero weight: {loss_config.weights}")
        if not scales:
            raise ValueError("scales must name at least one output scale")
        for check in CONFIG_CHECKS:
            check(loss_config)
        self.config = loss_config
        self.frame_ids = check_frame_ids(frame_ids, stereo=stereo)
        if "velocity" in self.weights and len(self.frame_ids) == 1:
            raise ValueError(
                "loss.weights.velocity supervises the pose net's motion between temporal frames, but "
                f"frame_ids {self.frame_ids} have no temporal source"
            )
        self.sources = source_slots(self.frame_ids, stereo)  # source key -> its slot in batch["images"]
        self.scales = list(scales)
        self.seed = seed
        self.min_depth, self.max_depth = (float(v) for v in depth_range)
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"depth_range must be 0 < min_depth < max_depth, got {tuple(depth_range)}")
        self.ssim = SSIMLoss(
            form=loss_config.ssim_form,
            weights=loss_config.ssim_weights,
            exponents=loss_config.ssim_exponents,
            window=loss_config.ssim_window,
        )
        self._generators: dict[torch.device, torch.Generator] = {}
        self.step: int | None = None

    def forward(self, batch: Batch, outputs: Outputs, step: int | None = None) -> LossOutput:
        """The weighted terms for one batch; ``step`` is the training step (None: outside training)."""
        self.step = step
        total = None
        terms: dict[str, torch.Tensor] = {}
        images: dict[str, torch.Tensor] = {}
        for name, weight in self.weights.items():
            value, term_images = TERMS[name](batch, outputs, self)
            terms[name] = value.detach()
            images.update(term_images)
            total = weight * value if total is None else total + weight * value
        return LossOutput(total=total, terms=terms, images=images)

    @property
    def automask_active(self) -> bool:
        """Auto-masking is configured and its warm-up is over (outside training it always applies)."""
        warm = self.step is None or self.step >= self.config.automask_warmup_steps
        return self.config.automask and warm

    def generator(self, device: torch.device) -> torch.Generator:
        """The seeded noise generator of ``device`` (created on first use)."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The noise generators' states travel in ``state_dict``, so a resumed run draws the same noise."""
        return {str(device): generator.get_state() for device, generator in self._generators.items()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        for device, generator_state in state.items():
            self.generator(torch.device(device)).set_state(generator_state)


def identity_errors(batch: Batch, objective: Objective) -> torch.Tensor | None:
    """(B, S, H, W) reprojection error of every un-warped source against the target, the auto-mask's
    reference (no gradient), or None while auto-masking is off."""
    if not objective.automask_active:
        return None
    images = batch["images"]
    with torch.no_grad():
        return torch.cat(
            [
                reprojection_error(images[:, slot], images[:, 0], objective.ssim, objective.config.alpha)
                for slot in objective.sources.values()
            ],
            dim=1,
        )


@register_term("photometric")
def photometric_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Min-reprojection photometric error of the warped sources (temporal and stereo), auto-masked, averaged
    over scales."""
    config = objective.config
    images = batch["images"]
    target = images[:, 0]
    identity = identity_errors(batch, objective)
    generator = objective.generator(target.device)
    total = 0.0
    automask = None
    for i in range(len(objective.scales)):
        warped = torch.cat(
            [
                reprojection_error(_warped(outputs, source, i), target, objective.ssim, config.alpha)
                for source in objective.sources
            ],
            dim=1,
        )
        loss, mask = min_reprojection_loss(warped, identity, config.min_reprojection, generator)
        total = total + loss
        if i == 0:
            automask = mask
    term_images = {"automask": automask} if objective.automask_active else {}
    return total / len(objective.scales), term_images


@register_term("smoothness")
def smoothness_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Edge-aware smoothness of each scale's disparity against the target at that size, divided by 2^scale."""
    target = batch["images"][:, 0]
    total = 0.0
    for i, scale in enumerate(objective.scales):
        disparity = outputs["disparities"][i]
        image = target
        if image.shape[-2:] != disparity.shape[-2:]:
            image = F.interpolate(target, size=disparity.shape[-2:], mode="area")
        total = total + edge_aware_smoothness(disparity, image) / 2**scale
    return total / len(objective.scales), {}


@register_term("velocity")
def velocity_term(batch: Batch, outputs: Outputs, objective: Objective):
    """| ||t_pred|| - travel | of every temporal source with known ``batch["travel"]`` (velocity.py)."""
    if "travel" not in batch:
        raise KeyError("the velocity term needs batch['travel'] (B, F - 1): metres to each temporal source")
    transforms = outputs["transforms"]
    translation = torch.stack([transforms[f][:, :3, 3] for f in objective.frame_ids[1:]], dim=1)
    return velocity_loss(translation, batch["travel"]), {}


@register_data_check("velocity")
def check_odometry(train_set: Any, data_path: str) -> None:
    """Log how many training samples velocity supervision reaches (``train_set.travel(i)``: metres to each
    temporal source, NaN unknown); none at all is an error."""
    known = sum(bool(np.isfinite(train_set.travel(i)).any()) for i in range(len(train_set)))
    if known == 0:
        raise ValueError(
            f"{data_path}: loss.weights.velocity > 0 but none of the {len(train_set)} training samples has "
            "odometry (distance travelled between frames): velocity supervision without odometry cannot make "
            "depth metric. Train on data with odometry (KITTI oxts, a bag's odometry topic: "
            "data.odometry_topic) or set loss.weights.velocity=0"
        )
    log.info(
        "velocity supervision: %d of %d samples have odometry; the rest get no velocity term",
        known,
        len(train_set),
    )


def _warped(outputs: Outputs, source: int | str, scale_index: int) -> torch.Tensor:
    warped = outputs["warped"]
    if (source, scale_index) not in warped:
        raise KeyError(
            f"outputs['warped'] has no entry ({source!r}, {scale_index}) (source, scale index); "
            f"present: {sorted(warped, key=str)}"
        )
    return warped[(source, scale_index)]
