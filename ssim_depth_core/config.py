"""Typed training configuration: nested dataclasses loaded from YAML, overridable with ``key=value``.

Every knob has a default and a type here; YAML files and ``--set`` overrides only change values: a YAML file
merges into the defaults section by section (a section it leaves out keeps its defaults; a value it gives,
a mapping such as ``loss.weights`` included, replaces the default), and ``--set key.sub=value`` replaces the
value at its dotted key (``loss.weights.velocity=0.05`` adds one term to the weights in force; a mapping
value replaces the whole mapping). Unknown keys, values of the wrong type or out of range, and string
choices outside their ``Literal`` are rejected at load time with the offending key and value (and what is
allowed) named.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.errors import not_found, yaml_error_line

# torchvision backbones the depth and pose nets take (models/encoder.py builds them; ImageNet normalisation
# inside). ResNets give the U-Net decoder their stem map at 1/2; ConvNeXts, whose stem is at 1/4, get a small
# conv stem for it; the light trunks (MobileNetV3-Large, EfficientNet-B0, RegNetY-400MF: CPU inference) are
# tapped at strides 2 .. 32 (docs/models.md).
EncoderName = Literal[
    "resnet18",
    "resnet34",
    "resnet50",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
]
# Config keys renamed by issue 19 -> their replacement. A config stored before (a checkpoint, a study record,
# a run's config.yaml) is read with the replacement (:func:`upgrade_stored_config`, the one place where a
# ResNet depth becomes a name); a YAML file or ``--set`` override that uses one is refused, naming its
# replacement.
RENAMED_MODEL_KEYS = {"num_layers": "encoder", "pose_num_layers": "pose_encoder"}
_LEGACY_RESNET_DEPTHS = (18, 34, 50)


def _check_range(
    config: Any,
    prefix: str,
    at_least_one: Sequence[str] = (),
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    fractions: Sequence[str] = (),
) -> None:
    """Raise ValueError naming the key and value of the first field of ``config`` out of its range (every
    range is finite: NaN and infinity fail each one)."""
    for names, expected, ok in (
        (at_least_one, ">= 1", lambda v: v >= 1),
        (positive, "> 0", lambda v: v > 0),
        (non_negative, ">= 0", lambda v: v >= 0),
        (fractions, "in [0, 1]", lambda v: 0 <= v <= 1),
    ):
        for name in names:
            value = getattr(config, name)
            if not (ok(value) and math.isfinite(value)):
                raise ValueError(f"config '{prefix}{name}' must be {expected}, got {value!r}")


@dataclass
class SQLConfig:
    """The Self Query Layer head (``model.decoder: sql``; models/sql.py, docs/models.md)."""

    queries: int = 64  # Q: coarse-grained queries, one depth bin each
    dim: int = 32  # C: channels of the per-pixel representation S that the queries are compared with
    patch_size: int = 16  # pixels per side of the patches the queries are computed from
    embed_dim: int = 128  # width of the transformer over the patches
    layers: int = 4  # transformer layers
    heads: int = 4  # attention heads (must divide embed_dim)
    # disparity: the bins split the normalised disparity [0, 1], so the untrained head starts where the
    # unet's sigmoid does; depth: they split [min_depth, max_depth] in metres (the seed's), which did not
    # train on the CPU recipe: the bins drifted to max_depth (docs/models.md)
    bins: Literal["depth", "disparity"] = "disparity"


@dataclass
class ModelConfig:
    encoder: EncoderName = "resnet18"  # depth encoder, a torchvision model name
    pose_encoder: EncoderName = "resnet18"  # pose encoder (sees the two frames stacked: 6 input channels)
    # unet: sigmoid disparity heads at every scale of `scales`; sql: Self Query Layer depth bins (SQLdepth /
    # SPIdepth) at full resolution only (scales must be [0]); light: the unet's heads after depthwise-
    # separable convs with fewer channels (for the light encoders on a CPU). All output the same normalised
    # disparity.
    decoder: Literal["unet", "sql", "light"] = "unet"
    # Width of the unet / light decoder's five levels, full resolution first; empty: the decoder's own
    # (unet 16, 32, 64, 128, 256; light 16, 24, 32, 64, 128). Not for sql.
    decoder_channels: list[int] = field(default_factory=list)
    # The unet / light disparity heads: conv (a 3x3 conv to one channel) or separable (a depthwise 3x3, then a
    # 1x1 to one channel: the same functions, faster on ONNX Runtime's CPU provider; docs/models.md). Not sql.
    disparity_head: Literal["conv", "separable"] = "conv"
    sql: SQLConfig = field(default_factory=SQLConfig)
    pretrained: bool = False  # ImageNet weights from torchvision (needs them downloadable or cached)
    scales: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # decoder output scales used in the loss
    padding_mode: Literal["reflection", "zeros"] = "reflection"  # zeros exports to any TensorRT version
    min_depth: float = 0.1  # metres; disparity 1 maps here
    max_depth: float = 100.0  # metres; disparity 0 maps here
    # Depth (metres) the untrained net predicts (its disparity heads' bias); 0: the sigmoid's midpoint,
    # about 2 x min_depth. Stereo training needs it near the scenes' typical depth: the known baseline pulls
    # the scale only from within the photometric loss's basin, about 2x (docs/training.md, "Metric depth").
    initial_depth: float = 0.0
    # The pose net sees the frames area-downsampled by this integer factor: 1 as published; 2 quarters the
    # pose net's compute (a quarter less time per training step on a CPU) and still resolves the motion.
    pose_downsample: int = 1
    # CPU training: convolutions whose output has <= 32 positions per image get their weight gradient by
    # unfold + GEMM (models/conv_grad.py), faster than oneDNN's there (bench/conv_grad.py); same gradients.
    small_map_weight_grad: bool = True

    def __post_init__(self) -> None:
        _check_range(self, "model.", positive=("min_depth", "max_depth"))
        if not self.max_depth > self.min_depth:
            raise ValueError(
                f"config 'model.max_depth' must be > model.min_depth {self.min_depth}, got {self.max_depth!r}"
            )


@dataclass
class LossConfig:
    ssim_form: Literal["conventional", "exponent", "additive"] = "additive"
    ssim_weights: list[float] = field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3])  # additive w_l, w_c, w_s
    ssim_exponents: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # exponent a, b, g
    ssim_window: int = 3  # odd box-window size of the SSIM local statistics
    alpha: float = 0.85  # photometric = alpha * SSIM term + (1 - alpha) * L1
    min_reprojection: bool = True  # per-pixel minimum over sources (else their mean)
    automask: bool = (
        True  # drop pixels that the un-warped sources explain better (static camera, co-moving objects)
    )
    # Training steps before auto-masking starts. From scratch, masking from step 0 hides the pixels that a
    # right-direction motion with a still-wrong depth explains worse than no motion, and the pose net settles
    # on sideways motion; a few hundred unmasked steps let depth and motion agree first.
    automask_warmup_steps: int = 0
    # Supervised depth (seed 001, the "supervised" term: lambda_1 L1 + (1 - SSIM) / 2 + L_grad against
    # depth_gt where valid): the maps compared, depth (metres) or inverse depth (1/m; the SSIM sees them
    # divided by the model's range of them), and lambda_1, the L1 part's weight. The SSIM part uses
    # ssim_window (docs/training.md, "Supervised depth (seed 001)").
    supervised_space: Literal["depth", "inverse_depth"] = "depth"
    supervised_l1_weight: float = 0.1
    # Named loss terms and their weights; a term with weight 0 (or absent) is not computed. A dotted --set
    # (loss.weights.velocity=0.05) adds to the weights in force (these defaults, or the YAML file's); a
    # YAML file's weights or --set loss.weights={...} replace them.
    # Registered: photometric, smoothness, velocity (| ||t_pred|| - metres travelled |: needs odometry; metric
    # depth), supervised (against ground-truth depth: proj_depth maps or projected LiDAR; metric depth).
    weights: dict[str, float] = field(default_factory=lambda: {"photometric": 1.0, "smoothness": 1e-3})
    # Seed 002 (losses/bidirectional.py, docs/training.md "Seed 002 terms"): the terms photometric_bi
    # (L_p^biw, both warp directions), dsc_bi (depth-structure consistency) and feat_bi (encoder-feature warp,
    # L1) run the depth net on the source frames too. The options below only act on photometric_bi.
    # Camera-flow occlusion mask: a pixel is occluded where
    # |u_f + u_b|^2 >= occlusion_alpha1 (|u_f|^2 + |u_b|^2) + occlusion_alpha2 (pixels at full resolution),
    # and its error is weighted 1 - occlusion_lambda.
    occlusion_mask: bool = False
    occlusion_alpha1: float = 0.01
    occlusion_alpha2: float = 0.5
    occlusion_lambda: float = 1.0
    adaptive_weights: bool = False  # weight each photometric error by 1 - depth_diff (seed eq. 7-8)
    # Encoder levels whose feature maps feat_bi warps: level l is at 1 / 2**(l + 1) of the input (0: the stem,
    # 64 channels; 1: layer1; 2: layer2), intrinsics from the batch's K at scale l + 1.
    feature_levels: list[int] = field(default_factory=lambda: [1])
    # feat_bi compares the feature maps as fixed values (no gradient into them), so that the encoder cannot
    # lower the term by flattening its features; its gradient reaches depth and pose through the warp.
    feature_detach: bool = True

    def __post_init__(self) -> None:
        _check_range(
            self,
            "loss.",
            non_negative=(
                "automask_warmup_steps", "supervised_l1_weight", "occlusion_alpha1", "occlusion_alpha2"
            ),
            fractions=("alpha", "occlusion_lambda"),
        )  # fmt: skip
        for name, weight in self.weights.items():
            if not (weight >= 0 and math.isfinite(weight)):  # from_dict has made each a float
                raise ValueError(f"config 'loss.weights.{name}' must be a number >= 0, got {weight!r}")


@dataclass
class DataConfig:
    height: int = 192  # network input height (a multiple of SIZE_MULTIPLE, 32)
    width: int = 640  # network input width (a multiple of 32)
    frame_ids: list[int] = field(default_factory=lambda: [0, -1, 1])  # target first, then source offsets
    # Stereo training (Monodepth2's S with frame_ids [0], MS with temporal sources too): the rectified partner
    # camera's frame is one more source, warped with the known baseline instead of a pose-net estimate.
    stereo: bool = False
    # Split file of the training samples (a path, or a name resolved as DATA/splits/*/<name>_files.txt);
    # empty = the dataset's own DATA/splits/*/train_files.txt when it has one, else every usable frame of
    # every sequence; "none" = no split file: every usable frame of every sequence.
    train_split: str = ""
    # Split file of the validation samples, as train_split; empty = the dataset's DATA/splits/*/val_files.txt
    # when it has one, else no validation pass; "none" = no validation pass.
    val_split: str = ""
    image_topic: str = ""  # rosbag2 image topic; empty = auto-detect when unambiguous
    camera_info_topic: str = ""  # rosbag2 CameraInfo topic; empty = auto-detect
    # rosbag2 odometry for velocity supervision: nav_msgs/Odometry, geometry_msgs/TwistStamped,
    # TwistWithCovarianceStamped or tf2_msgs/TFMessage (/tf, the world -> vehicle chain); empty = auto-detect
    # when the bag has exactly one such topic (none: no odometry), "none" = do not read odometry.
    odometry_topic: str = ""
    stereo_image_topic: str = (
        ""  # rosbag2 image topic of the stereo partner camera (data.stereo); empty = auto
    )
    stereo_camera_info_topic: str = (
        ""  # its CameraInfo topic (the baseline comes from P); empty = auto-detect
    )
    intrinsics: list[float] = field(default_factory=list)  # fx fy cx cy width height when a source lacks them
    # Ground-truth depth of KITTI-layout drives (validation, evaluation, the supervised term): auto = the
    # annotated proj_depth/groundtruth map where present, else the frame's velodyne scan projected into the
    # camera (the Eigen raw ground truth); annotated = maps only; velodyne = projected scans only.
    depth_source: Literal["auto", "annotated", "velodyne"] = "auto"
    static_threshold: float = (
        0.0  # drop triplets whose mean abs frame difference is below this (0 = keep all)
    )
    brightness: float = 0.2  # colour jitter ranges, applied to network inputs only
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    jitter_probability: float = 0.5
    flip_probability: float = 0.5
    num_workers: int = 2
    # Keep every decoded, resized frame in memory (one copy per data-loader worker): for datasets that fit,
    # such as the synthetic CPU recipe's 1,000 frames at 192x64 (37 MB); PNG decoding is then paid once.
    cache_frames: bool = False

    def __post_init__(self) -> None:
        # a jitter factor is drawn from [1 - r, 1 + r], which must not go below 0; torchvision takes hue
        # shifts within half a turn
        _check_range(
            self,
            "data.",
            at_least_one=("height", "width"),
            non_negative=("static_threshold", "num_workers"),
            fractions=("brightness", "contrast", "saturation", "jitter_probability", "flip_probability"),
        )
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"config 'data.hue' must be in [0, 0.5], got {self.hue!r}")
        if self.intrinsics:
            try:
                Intrinsics.from_list(self.intrinsics)
            except ValueError as error:
                raise ValueError(f"config 'data.intrinsics': {error}") from error


def check_frame_ids(frame_ids: Sequence[int], stereo: bool = False) -> list[int]:
    """``frame_ids`` as a list, checked: the target 0 first, then distinct non-zero source offsets, at least
    one unless ``stereo`` (the partner camera is then a source: [0] alone is stereo-only training)."""
    frame_ids = list(frame_ids)
    least = 1 if stereo else 2
    if len(frame_ids) < least or frame_ids[0] != 0 or len(set(frame_ids)) != len(frame_ids):
        sources = "any number of" if stereo else "at least one"
        raise ValueError(
            f"frame_ids must start with the target frame 0, followed by {sources} source(s): distinct "
            f"non-zero offsets, got {frame_ids}"
        )
    return frame_ids


STEREO = "s"  # the stereo partner's key among the sources of outputs["transforms"] and outputs["warped"]


def source_slots(frame_ids: Sequence[int], stereo: bool) -> dict[int | str, int]:
    """Each source's image slot in a batch's "images": ``frame_ids[1:]`` in order after the target (slot 0),
    then with ``stereo`` the partner (:data:`STEREO`), last."""
    slots: dict[int | str, int] = {frame_id: slot for slot, frame_id in enumerate(frame_ids[1:], start=1)}
    if stereo:
        slots[STEREO] = len(frame_ids)
    return slots


@dataclass
class OptimConfig:
    batch_size: int = 12
    learning_rate: float = 1e-4
    epochs: int = 20
    # step: learning_rate, times lr_gamma after lr_step_epochs epochs (the published recipe);
    # cosine: a half cosine from learning_rate at the start to 0 at the end of `epochs`, set every step.
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_step_epochs: int = 15
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    max_steps: int = 0  # stop after this many optimiser steps (0 = run all epochs)

    def __post_init__(self) -> None:
        _check_range(
            self,
            "optim.",
            at_least_one=("batch_size", "epochs", "lr_step_epochs"),
            positive=("learning_rate", "lr_gamma"),
            non_negative=("weight_decay", "max_steps"),
        )


# The encoders downsample five times; the decoders' skip connections need every level to halve exactly.
SIZE_MULTIPLE = 32
# The largest network input side a config or a model file may declare (KITTI's full width is 1242).
MAX_INPUT_SIDE = 8192


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 on CUDA with bf16 support, fp16 on other CUDA, none on a CPU
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # on CUDA only
    log_every: int = 10  # steps between TensorBoard scalar writes
    preview_every: int = 200  # steps between TensorBoard image previews
    checkpoint_every: int = 100  # steps between last.pt checkpoints (also written at every epoch end)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        _check_range(self, "", at_least_one=("log_every", "preview_every", "checkpoint_every"))
        sides = (self.data.height, self.data.width)
        if any(side % SIZE_MULTIPLE or side > MAX_INPUT_SIDE for side in sides):
            raise ValueError(
                f"config 'data.height' and 'data.width' must be multiples of {SIZE_MULTIPLE} up to "
                f"{MAX_INPUT_SIDE} (the networks' input), got {self.data.height}x{self.data.width}"
            )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` merged into them (section by section, :func:`_merge`), then
    ``key.sub=value`` overrides (values parsed as YAML), each replacing the value at its dotted key."""
    values = to_dict(TrainConfig())
    if path is not None:
        if not Path(path).is_file():
            raise not_found("config", path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a YAML config ({yaml_error_line(error)})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        _refuse_renamed_keys(loaded, path)
        _merge(values, loaded)
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override '{override}' is not of the form key.sub=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override '{override}': '{part}' is not a mapping (got {node!r})")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(
                f"override '{override}': its value is not YAML ({yaml_error_line(error)})"
            ) from None
    _refuse_renamed_keys(values, None)
    return from_dict(TrainConfig, values)


def _merge(base: dict[str, Any], update: dict[str, Any], cls: type | None = None) -> None:
    """Merge ``update`` into ``base`` in place, as fields of dataclass ``cls`` (default :class:`TrainConfig`):
    a config section (a nested dataclass) key by key; any other value, a mapping such as ``loss.weights``
    included, replacing, so that a run's own config.yaml loads back to the same config."""
    hints = typing.get_type_hints(cls or TrainConfig)
    for key, value in update.items():
        section = hints.get(key)
        if dataclasses.is_dataclass(section) and isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, section)
        else:
            base[key] = value


def _refuse_renamed_keys(values: dict[str, Any], path: str | Path | None) -> None:
    """Raise for a key of :data:`RENAMED_MODEL_KEYS` in a user's config, naming its replacement."""
    model = values.get("model")
    if not isinstance(model, dict):
        return
    for old, new in RENAMED_MODEL_KEYS.items():
        if old in model:
            value = model[old]
            example = f"resnet{value}" if value in _LEGACY_RESNET_DEPTHS else "resnet18"
            source = f"{path}: " if path is not None else ""
            raise ValueError(
                f"{source}config 'model.{old}' was replaced by 'model.{new}', a torchvision model name "
                f"({', '.join(typing.get_args(EncoderName))}): write model.{new}: {example} in place of "
                f"model.{old}: {value}"
            )


def upgrade_stored_config(values: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict (checkpoint, study record, run folder) in today's keys: each key of
    :data:`RENAMED_MODEL_KEYS` becomes its replacement (ResNet depth 18/34/50 -> "resnet18"/...).

    ``values`` is not modified; a dict without renamed keys is returned as is.
    """
    model = values.get("model")
    if not isinstance(model, dict) or not set(model) & set(RENAMED_MODEL_KEYS):
        return values
    model = dict(model)
    for old, new in RENAMED_MODEL_KEYS.items():
        if old not in model:
            continue
        depth = model.pop(old)
        if depth not in _LEGACY_RESNET_DEPTHS:
            raise ValueError(
                f"stored config 'model.{old}': {depth!r} is not a ResNet depth "
                f"({list(_LEGACY_RESNET_DEPTHS)})"
            )
        name = f"resnet{depth}"
        if model.get(new, name) != name:
            raise ValueError(f"stored config has both model.{old}: {depth} and model.{new}: {model[new]!r}")
        model[new] = name
    return {**values, "model": model}


def _flatten(values: dict[str, Any], cls: type | None = None, prefix: str = "") -> dict[str, Any]:
    """``values`` (fields of dataclass ``cls``, default :class:`TrainConfig`) by dotted key, section by
    section; a mapping-valued field (``loss.weights``) stays one value."""
    hints, flat = typing.get_type_hints(cls or TrainConfig), {}
    for key, value in values.items():
        section = hints.get(key)
        if dataclasses.is_dataclass(section) and isinstance(value, dict):
            flat.update(_flatten(value, section, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_differences(old: dict, new: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """``key: old -> new`` for each value of two resolved configs (dicts, as stored) that differs, outside
    the dotted keys ``ignore``. A key missing from a config older than it stands for its default (a new
    config key defaults to the old behaviour); a renamed key is compared under its new name
    (``model.num_layers: 18`` is ``model.encoder: resnet18``). The SQL head's settings (``model.sql.*``)
    count only where one of the two uses that decoder: their defaults change without changing any other
    network."""
    defaults = _flatten(to_dict(TrainConfig()))
    old = {**defaults, **_flatten(upgrade_stored_config(old))}
    new = {**defaults, **_flatten(upgrade_stored_config(new))}
    keys = set(old) | set(new)
    if "sql" not in (old["model.decoder"], new["model.decoder"]):
        keys = {key for key in keys if not key.startswith("model.sql.")}
    keys = sorted(keys - ignore)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def stored_config(values: dict[str, Any], source: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of a config dict stored in ``source`` (a checkpoint or model file), its older
    keys upgraded (:func:`upgrade_stored_config`); a ValueError naming ``source`` when it is invalid."""
    try:
        return from_dict(TrainConfig, upgrade_stored_config(values))
    except ValueError as error:
        raise ValueError(f"{source}: its stored training config is invalid ({error})") from error


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking names and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"config '{key}' must be a mapping, got {value!r}")
        return from_dict(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"config '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config '{key}' must be a mapping, got {value!r}")
        key_type, item = typing.get_args(hint)
        return {_coerce(key_type, k, key): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if origin is Literal:
        choices = typing.get_args(hint)
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            allowed = ", ".join(repr(choice) for choice in choices)
            raise ValueError(f"config '{key}' must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"config '{key}': union types are not supported")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config '{key}' must be {hint.__name__}, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML dumps and checkpoints)."""
    return dataclasses.asdict(config)
