"""Backward of every conv shape in the CPU recipe's training model: oneDNN vs the unfold weight gradient.

Peer: ``F.conv2d``'s own autograd (oneDNN on a CPU), timed in the same process, forward + backward, for each
distinct (input, weight, stride) the model's convs see on one batch of ``synthetic_cpu.yaml``'s size. The
printed ratio (oneDNN time / unfold time) per output size is what ``SMALL_MAP_POSITIONS`` is chosen from:

    .venv/bin/python bench/conv_grad.py
"""

from __future__ import annotations

import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn
from train_step import CONFIG, random_batch  # the sibling script bench/train_step.py

from ssim_depth_core.config import load_config
from ssim_depth_core.models import MonodepthModel
from ssim_depth_core.models.conv_grad import conv2d_unfold_weight_grad


def conv_shapes(model: nn.Module, batch: dict[str, torch.Tensor]) -> Counter:
    """(padded input shape, weight shape, stride, padding, has bias) -> calls, over one forward pass."""
    shapes: Counter = Counter()

    def record(conv: nn.Conv2d, inputs, _output) -> None:
        x, padding = inputs[0], conv.padding
        if conv.padding_mode != "zeros":  # measure the conv on the padded map it really convolves
            x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = (0, 0)
        shapes[tuple(x.shape), tuple(conv.weight.shape), conv.stride, padding, conv.bias is not None] += 1

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model(batch)
    for hook in hooks:
        hook.remove()
    return shapes


def forward_backward_ms(conv, *args, repeats: int = 6) -> float:
    """Mean time of ``repeats`` forward + backward passes of ``conv(*args)``, after one warm-up."""
    conv(*args).sum().backward()
    tic = time.perf_counter()
    for _ in range(repeats):
        conv(*args).sum().backward()
    return (time.perf_counter() - tic) / repeats * 1e3


def main() -> None:
    config = load_config(CONFIG, ["model.small_map_weight_grad=false"])
    frames, height, width = len(config.data.frame_ids), config.data.height, config.data.width
    model = MonodepthModel(config.model, config.data.frame_ids).train()
    shapes = conv_shapes(model, random_batch(config.optim.batch_size, frames, height, width))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(shapes)} conv shapes")
    print("| input | weight | stride | output positions | calls | oneDNN ms | unfold ms | ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (x_shape, w_shape, stride, padding, has_bias), calls in shapes.items():
        x = torch.randn(x_shape, requires_grad=x_shape[1] not in (3, 6))  # the image input needs no grad
        weight = torch.randn(w_shape, requires_grad=True)
        bias = torch.randn(w_shape[0], requires_grad=True) if has_bias else None
        arguments = (x, weight, bias, stride, padding)
        native = forward_backward_ms(F.conv2d, *arguments)
        unfold = forward_backward_ms(conv2d_unfold_weight_grad, *arguments)
        output = F.conv2d(*arguments)
        positions = output.shape[-2] * output.shape[-1]
        print(
            f"| {list(x_shape)} | {list(w_shape)} | {stride[0]} | {positions} | {calls} | {native:.2f} | "
            f"{unfold:.2f} | {native / unfold:.2f}x |"
        )


if __name__ == "__main__":
    main()
