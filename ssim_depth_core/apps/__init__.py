"""Applications above the library: the ``ssim-depth`` command line, offline inference, evaluation."""
