"""Shapes, parameter counts and FLOPs of every depth-net and pose-net configuration (docs/models.md).

Every encoder (``model.encoder`` / ``model.pose_encoder``: ResNets, ConvNeXts and the light MobileNetV3-Large,
EfficientNet-B0, RegNetY-400MF) with every decoder (``model.decoder``: unet, sql, light), built on PyTorch's
meta device (shapes only: no weights in memory, no arithmetic, seconds for all; the light trunks are built on
the CPU and moved there), one image at the given size. FLOPs are what ``torch.utils.flop_counter.
FlopCounterMode`` counts for one forward pass: convolutions and matrix products, 2 per multiply-add;
element-wise ops, normalisation and softmax are not counted. The pose net sees two frames stacked (6
channels) at the same size (``model.pose_downsample: 1``).

    .venv/bin/python bench/model_sizes.py                          # 640x192, the KITTI training size
    .venv/bin/python bench/model_sizes.py --size 640x192 --size 1024x320   # the table in docs/models.md
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ssim_depth_core.config import EncoderName, ModelConfig, SQLConfig
from ssim_depth_core.models import DepthNet, PoseNet
from ssim_depth_core.models.decoder import DECODER_CHANNELS
from ssim_depth_core.models.depth import DECODERS
from ssim_depth_core.models.light_decoder import LIGHT_DECODER_CHANNELS


@dataclasses.dataclass(frozen=True)
class Size:
    net: str  # "depth" or "pose"
    encoder: str
    decoder: str  # "-" for the pose net
    encoder_channels: tuple[int, ...]
    output: tuple[int, ...]
    parameters: int
    flops: int


def _count(net: nn.Module, *inputs: torch.Tensor) -> tuple[tuple[int, ...], int]:
    """(output shape, FLOPs) of one forward pass on meta tensors."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        output = net(*inputs)
    first = output[0] if isinstance(output, tuple) else output
    return tuple(first.shape), counter.get_total_flops()


def measure(height: int, width: int) -> list[Size]:
    """One row per depth configuration (encoder x decoder), then per pose encoder."""
    rows = []
    for encoder in typing.get_args(EncoderName):
        for decoder in DECODERS:
            config = ModelConfig(
                encoder=encoder, decoder=decoder, scales=[0] if decoder == "sql" else [0, 1, 2, 3]
            )
            with torch.device("meta"):
                net = DepthNet.from_config(config, pretrained=False).eval()
                image = torch.empty(1, 3, height, width)
            shape, flops = _count(net, image)
            parameters = sum(p.numel() for p in net.parameters())
            rows.append(Size("depth", encoder, decoder, net.encoder.num_ch_enc, shape, parameters, flops))
    for encoder in typing.get_args(EncoderName):
        with torch.device("meta"):
            net = PoseNet(encoder).eval()
            frame = torch.empty(1, 3, height, width)
        shape, flops = _count(net, frame, frame)
        parameters = sum(p.numel() for p in net.parameters())
        rows.append(Size("pose", encoder, "-", net.encoder.num_ch_enc, (1, 6), parameters, flops))
    return rows


def table(sizes: list[tuple[int, int]]) -> str:
    """The markdown table: one row per configuration, one GFLOPs column per (height, width) in ``sizes``."""
    measured = [measure(height, width) for height, width in sizes]
    for (height, width), rows in zip(sizes, measured, strict=True):
        for row in rows:  # the shapes every configuration must give
            assert row.output == ((1, 1, height, width) if row.net == "depth" else (1, 6)), row
    sql = SQLConfig()
    columns = " | ".join(f"GFLOPs {width}x{height}" for height, width in sizes)
    lines = [
        f"Batch 1; FLOPs per forward pass (FlopCounterMode: convolutions and matrix products, 2 per "
        f"multiply-add). SQL head: {sql.queries} queries, C = {sql.dim}, {sql.patch_size}x{sql.patch_size} "
        f"patches, transformer {sql.layers} x {sql.embed_dim} wide, {sql.heads} heads. Encoder maps finest "
        f"first, at 1/2 .. 1/32 of the input (ConvNeXt's 1/2 map is its own small stem, which the pose net "
        f"leaves out; the light trunks' are their last layer at each stride). Light decoder widths "
        f"{', '.join(str(c) for c in LIGHT_DECODER_CHANNELS)} (U-Net "
        f"{', '.join(str(c) for c in DECODER_CHANNELS)}), full resolution first. Outputs: the depth nets "
        f"1x1xHxW disparity, the pose nets axis-angle + translation (1x6) from two frames stacked.",
        "",
        f"| net | encoder | decoder | encoder maps (channels) | parameters (M) | {columns} |",
        "|---|---|---|---|---:|" + "---:|" * len(sizes),
    ]
    for index, row in enumerate(measured[0]):
        channels = ", ".join(str(c) for c in row.encoder_channels)
        flops = " | ".join(f"{rows[index].flops / 1e9:.1f}" for rows in measured)
        name = f"| {row.net} | {row.encoder} | {row.decoder} |"
        lines.append(f"{name} {channels} | {row.parameters / 1e6:.2f} | {flops} |")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    """ "WIDTHxHEIGHT" -> (height, width)."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 32 or int(height) % 32:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, multiples of 32, got {text!r}")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size",
        type=_size,
        action="append",
        metavar="WxH",
        help="input size, repeatable: one GFLOPs column each (default 640x192)",
    )
    args = parser.parse_args(argv)
    print(table(args.size or [(192, 640)]))


if __name__ == "__main__":
    main()
