# One entry point for people and CI. Every target creates .venv and installs the project if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO ?= demo
ifeq ($(strip $(DEMO)),)
$(error DEMO must name the demo's folder (default: demo); its data and run folders are replaced)
endif
# The demo trains 8 epochs of 78 steps (4 training drives of 78 triplets, batch 4): 624 steps, the learning
# rate dropped for the last epoch. 0 = that whole schedule; a smaller number stops training early.
DEMO_STEPS ?= 0

.PHONY: install test demo clean

$(STAMP): pyproject.toml
	@# Open3D (a test reference) needs libusb; Debian/Ubuntu machines get it from apt when it is missing.
	@ldconfig -p | grep -q libusb-1.0 || apt-get install -y -qq libusb-1.0-0 \
		|| (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) \
		|| echo "warning: libusb-1.0 is missing; the Open3D reference tests will be skipped"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# The core was the distribution `ssim-depth` before it became `ssim-depth-core`: drop that record from an
	@# older venv (it owns bin/ssim-depth; the ROS package `ssim_depth`, the same name to pip, has no such file).
	$(BIN)/python -m pip show --files ssim-depth 2>/dev/null | grep -q 'bin/ssim-depth$$' \
		&& $(BIN)/python -m pip uninstall --quiet --yes ssim-depth || true
	$(BIN)/python -m pip install --quiet -e ".[dev,ros]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	@# Two workers of one thread each (pytest-xdist): on a 2-core machine about two thirds of the serial time, as
	@# one worker's training steps overlap the other's waits on DDS and subprocesses; groups in conftest.py.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadgroup

# synthetic drives + bags -> self-supervised training -> Eigen metrics on a held-out drive of another seed
# -> ONNX export -> depth node fed by the held-out drive's bag -> depth images, point cloud, latency statistics
# Data: 6 drives of 80 frames (1-4 train, 5 validates; 6, the data's own test drive, is not used) and the
# held-out drive. Each dataset is rendered once: its split files are written last, so an interrupted render
# starts over, in an emptied folder (no drive of an earlier recipe stays behind); editing this Makefile
# renders them anew. Training replaces the run of an earlier `make demo` (--overwrite). The net starts at 10 m
# (model.initial_depth): from the default 0.2 m, 624 steps of velocity supervision leave the scale 26x off.
SPLITS := $(DEMO)/data/splits/synthetic
HELDOUT := $(DEMO)/heldout/splits/synthetic/test_files.txt

$(SPLITS)/train_files.txt: Makefile | $(STAMP)
	rm -rf $(DEMO)/data
	$(BIN)/ssim-depth synth --out $(DEMO)/data --seed 1 --drives 6 --frames 80 --bag mcap

$(HELDOUT): Makefile | $(STAMP)
	rm -rf $(DEMO)/heldout
	$(BIN)/ssim-depth synth --out $(DEMO)/heldout --seed 2 --drives 1 --frames 60 --bag mcap

demo: $(STAMP) $(SPLITS)/train_files.txt $(HELDOUT)
	$(BIN)/python training/train.py --config training/configs/synthetic_cpu.yaml --data $(DEMO)/data \
		--out $(DEMO)/run --overwrite --set optim.epochs=8 --set optim.lr_step_epochs=7 \
		--set model.initial_depth=10 \
		--set optim.max_steps=$(DEMO_STEPS) \
		--set data.train_split=$(SPLITS)/train_files.txt --set data.val_split=$(SPLITS)/val_files.txt
	$(BIN)/python training/evaluate.py --checkpoint $(DEMO)/run/checkpoints/best.pt --data $(DEMO)/heldout \
		--split test --json $(DEMO)/run/metrics.json --overwrite
	$(BIN)/python training/export.py --checkpoint $(DEMO)/run/checkpoints/best.pt --onnx $(DEMO)/run/depth.onnx \
		--overwrite
	PYTHONPATH=ros2_ws/src/ssim_depth $(BIN)/python -m ssim_depth.tools.pipeline --model $(DEMO)/run/depth.onnx \
		--bag $$(ls -d $(DEMO)/heldout/bags/*/ | head -n 1) --out $(DEMO)/run/serving --overwrite
	@echo "outputs: $(DEMO)/run: config.yaml, checkpoints/, tensorboard/ ($(BIN)/tensorboard --logdir $(DEMO)/run)," \
		"metrics.json, depth.onnx, serving/ (depth/, depth_raw/, points.ply, frames.csv, latency.json, summary.json, node.log)"

clean:
	rm -rf $(VENV) $(DEMO)
