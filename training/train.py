"""`python training/train.py ...`: the same as `ssim-depth train ...` (see `--help`)."""

import sys

from ssim_depth_core.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
