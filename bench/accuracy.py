"""Accuracy within a CPU time budget: train on synthetic drives, evaluate on a held-out drive of another seed.

Peer: the same network untrained (evaluated through the same pipeline in the same run). Training runs in
chunks of ``--eval-every`` steps; after each chunk the checkpoint is evaluated on the held-out drive (Eigen
protocol, median-scaled, and without scaling too for a metric model), which gives the learning curve.
Evaluation time is not counted in the budget.

    python bench/accuracy.py --out runs/accuracy --minutes 15 --forms additive conventional exponent

Writes OUT/<form>/curve.json and prints a markdown table for docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ssim_depth_core.apps.evaluate import evaluate_model, format_report
from ssim_depth_core.config import load_config
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def train_with_curve(config_path, overrides, data, heldout, out, minutes, eval_every):
    """Train in chunks until ``minutes`` of training time; evaluate after each chunk. Returns the curve.

    Every training drive trains (no split: the held-out drive is of another data seed) and there is no
    validation pass inside the budget, as in the published figures.
    """
    config = load_config(config_path, ["data.train_split=none", "data.val_split=none", *overrides])
    trainer = Trainer(config, data, out)
    curve = [{"step": 0, "minutes": 0.0, **evaluate(trainer.save_checkpoint("untrained.pt"), heldout)}]
    trained = 0.0
    while trained < minutes * 60:
        config.optim.max_steps = trainer.step + eval_every
        tic = time.perf_counter()
        start = trainer.step
        trainer.fit()
        trained += time.perf_counter() - tic
        if trainer.step == start:  # the recipe's epochs ended within the budget
            break
        point = {
            "step": trainer.step,
            "minutes": trained / 60,
            **evaluate(trainer.checkpoint_dir / "last.pt", heldout),
        }
        logging.info(
            "step %d after %.1f min: abs_rel %.3f (median-scaled)",
            point["step"],
            point["minutes"],
            point["median"]["abs_rel"],
        )
        curve.append(point)
    return curve


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by the accuracy benches: config, overrides and the size of the training set."""
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "configs" / "synthetic_cpu.yaml")
    parser.add_argument("--drives", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def prepare_drives(out: Path, drives: int, frames: int) -> tuple[Path, Path]:
    """Training drives (seed 1) and a held-out drive of another seed (seed 2) under ``out``, made once."""
    data, heldout = out / "data", out / "heldout"
    if not data.exists():
        generate_dataset(data, seed=1, drives=drives, frames=frames, bag="none")
    if not heldout.exists():
        generate_dataset(heldout, seed=2, drives=1, frames=60, bag="none")
    return data, heldout


def evaluate(checkpoint: Path, heldout: Path) -> dict:
    """:func:`evaluate_model`'s result on the held-out drive (metric table too for a metric model)."""
    return evaluate_model(checkpoint, heldout, "test", backend="torch", progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget per form")
    parser.add_argument("--eval-every", type=int, default=245, help="steps between held-out evaluations")
    parser.add_argument("--forms", nargs="+", default=["additive"], help="SSIM forms to compare")
    add_data_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data, heldout = prepare_drives(args.out, args.drives, args.frames)

    rows = []
    for form in args.forms:
        run = args.out / form
        overrides = [*args.set, f"loss.ssim_form={form}"]
        curve = train_with_curve(args.config, overrides, data, heldout, run, args.minutes, args.eval_every)
        (run / "curve.json").write_text(json.dumps(curve, indent=2))
        untrained, final = curve[0], curve[-1]
        rows.append((form, untrained, final))
        print(f"\n{form}, untrained:\n{format_report(untrained)}")
        print(f"{form}, {final['step']} steps:\n{format_report(final)}")

    print("\nMedian-scaled metrics; metric AbsRel without scaling (metric models only); scale ratio")
    print("median(gt)/median(pred) per frame, mean and std.\n")
    print(
        "| SSIM form | steps | train min | AbsRel | SqRel | RMSE | RMSE log | a1 | untrained | gain "
        "| metric AbsRel | scale mean | scale std |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for form, untrained, final in rows:
        scaled, before = final["median"], untrained["median"]
        cells = [form, str(final["step"]), f"{final['minutes']:.1f}"]
        cells += [f"{scaled[k]:.3f}" for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1")]
        cells += [f"{before['abs_rel']:.3f}", f"{before['abs_rel'] / scaled['abs_rel']:.2f}x"]
        cells += [f"{final['metric']['abs_rel']:.3f}" if "metric" in final else "-"]
        cells += [f"{final['scale_mean']:.3f}", f"{final['scale_std']:.3f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
