"""`python training/evaluate.py ...`: the same as `ssim-depth evaluate ...` (see `--help`)."""

import sys

from ssim_depth_core.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
