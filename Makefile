# One entry point for people and CI. Every target creates .venv and installs the project if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO ?= demo
# 0 = the recipe's whole schedule (10 epochs); a smaller number stops training early
DEMO_STEPS ?= 0

.PHONY: install test demo clean

$(STAMP): pyproject.toml
	@# Open3D (a test reference) needs libusb; Debian/Ubuntu machines get it from apt when it is missing.
	@ldconfig -p | grep -q libusb-1.0 || apt-get install -y -qq libusb-1.0-0 \
		|| (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) \
		|| echo "warning: libusb-1.0 is missing; the Open3D reference tests will be skipped"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,ros]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# synthetic drives + bags -> self-supervised training -> Eigen metrics on a held-out drive of another seed
# -> ONNX export -> depth node fed by the held-out drive's bag -> depth images, point cloud, latency statistics
SPLITS := $(DEMO)/data/splits/synthetic
demo: $(STAMP)
	$(BIN)/ssim-depth synth --out $(DEMO)/data --seed 1 --drives 10 --frames 100 --bag mcap
	$(BIN)/ssim-depth synth --out $(DEMO)/heldout --seed 2 --drives 1 --frames 60 --bag mcap
	$(BIN)/python training/train.py --config training/configs/synthetic_cpu.yaml --data $(DEMO)/data \
		--out $(DEMO)/run --set optim.max_steps=$(DEMO_STEPS) \
		--set data.train_split=$(SPLITS)/train_files.txt --set data.val_split=$(SPLITS)/val_files.txt
	$(BIN)/python training/evaluate.py --checkpoint $(DEMO)/run/checkpoints/best.pt --data $(DEMO)/heldout \
		--split test --json $(DEMO)/run/metrics.json
	$(BIN)/python training/export.py --checkpoint $(DEMO)/run/checkpoints/best.pt --onnx $(DEMO)/run/depth.onnx
	PYTHONPATH=ros2_ws/src/ssim_depth $(BIN)/python -m ssim_depth.pipeline --model $(DEMO)/run/depth.onnx \
		--bag $$(ls -d $(DEMO)/heldout/bags/*/ | head -n 1) --out $(DEMO)/run/serving
	@echo "outputs: $(DEMO)/run: config.yaml, checkpoints/, tensorboard/ (tensorboard --logdir $(DEMO)/run)," \
		"metrics.json, depth.onnx, serving/ (depth/, depth_raw/, points.ply, latency.json, node.log)"

clean:
	rm -rf $(VENV) demo
