"""Forward + backward time of the SSIM loss forms against a five-pool SSIM written from the formula.

The peer is the usual layout of a Monodepth-style SSIM: each of the five local statistics gets its own
reflection pad and 3x3 average pool, and autograd differentiates all of it. Both run in the same process on
the same inputs; the script prints a table of medians and the ratios:

    .venv/bin/python bench/ssim.py                 # B=12, 3 x 192 x 640 (a minute or two on 2 CPU cores)
    .venv/bin/python bench/ssim.py --batch 2 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssim_depth_core.losses.ssim import C1, C2, FORMS, SSIMLoss


def five_pool_ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peer: clamp((1 - SSIM) / 2, 0, 1) with one reflection pad + 3x3 average pool per statistic."""

    def window_mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), kernel_size=3, stride=1)

    mu_x = window_mean(x)
    mu_y = window_mean(y)
    var_x = window_mean(x * x) - mu_x * mu_x
    var_y = window_mean(y * y) - mu_y * mu_y
    cov = window_mean(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return torch.clamp((1 - ssim) / 2, 0, 1)


def time_forward_backward(
    candidates: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int,
    warmup: int,
) -> dict[str, float]:
    """Median seconds of ``loss(x, y).mean().backward()`` per candidate, gradients flowing into ``x``.

    Candidates take turns within each round, so a slow spell of the machine hits all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, loss in candidates.items():
            pred = x.detach().requires_grad_()
            start = time.perf_counter()
            loss(pred, y).mean().backward()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.height, args.width)
    x = torch.rand(shape, generator=generator)
    y = (x + 0.1 * torch.randn(shape, generator=generator)).clamp(0, 1)

    candidates: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "five-pool peer (conventional)": five_pool_ssim_loss,
        **{f"ours {form}": SSIMLoss(form) for form in FORMS},
    }
    reference = SSIMLoss("conventional")(x, y)
    if not torch.allclose(five_pool_ssim_loss(x, y), reference, atol=1e-4):
        raise RuntimeError("five-pool peer and our conventional form disagree; the comparison would be void")

    print(
        f"# SSIM loss forward+backward, input {args.batch} x 3 x {args.height} x {args.width} float32, CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}, "
        f"{datetime.date.today().isoformat()}, median of {args.repeats} rounds after {args.warmup} warm-up"
    )
    load_before = os.getloadavg()[0]
    times = time_forward_backward(candidates, x, y, args.repeats, args.warmup)
    print("| implementation | median ms | speed-up vs five-pool |")
    print("|---|---:|---:|")
    peer = times["five-pool peer (conventional)"]
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {peer / seconds:.2f}x |")
    print()
    speedup = peer / times["ours conventional"]
    additive = times["ours additive"] / times["ours conventional"]
    print(f"speedup ours-conventional vs five-pool: {speedup:.2f}x (goal >= 2x)")
    print(f"additive / ours-conventional time: {additive:.2f}x (goal <= 1.2x)")
    print(f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
