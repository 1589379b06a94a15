"""`python training/export.py ...`: the same as `ssim-depth export ...` (see `--help`)."""

import sys

from ssim_depth_core.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
