"""Run under ``torchrun``: train a few DDP steps (gloo on CPU), then save this rank's parameters and the
state of its global torch generator.

Usage: torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py DATA OUT [KEY=VALUE ...]
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ssim_depth_core.config import load_config
from ssim_depth_core.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic_cpu.yaml"


def main() -> None:
    data, out, *overrides = sys.argv[1:]
    trainer = Trainer(load_config(CONFIG, [*overrides, "optim.max_steps=3"]), data, Path(out) / "run")
    rank = trainer.context.rank
    if rank == 0:
        torch.save({k: v.clone() for k, v in trainer.model.named_parameters()}, Path(out) / "initial.pt")
    trainer.fit()
    # Parameters only: BatchNorm running statistics are per process (DDP broadcasts rank 0's each forward).
    torch.save({k: v.detach() for k, v in trainer.model.named_parameters()}, Path(out) / f"rank{rank}.pt")
    torch.save(torch.get_rng_state(), Path(out) / f"rng{rank}.pt")  # what a checkpoint keeps of rank 0 only
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
