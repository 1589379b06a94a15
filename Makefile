# One entry point for people and CI. Every target creates .venv and installs the project if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO ?= demo
DEMO_STEPS ?= 300

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

# Synthetic drives -> self-supervised training -> Eigen metrics on a held-out drive of another seed.
demo: $(STAMP)
	$(BIN)/ssim-depth synth --out $(DEMO)/data --seed 1 --drives 4 --frames 100 --bag mcap
	$(BIN)/ssim-depth synth --out $(DEMO)/heldout --seed 2 --drives 1 --frames 60 --bag none
	$(BIN)/python training/train.py --config training/configs/synthetic_cpu.yaml --data $(DEMO)/data \
		--out $(DEMO)/run --set optim.max_steps=$(DEMO_STEPS)
	$(BIN)/python training/evaluate.py --checkpoint $(DEMO)/run/checkpoints/last.pt --data $(DEMO)/heldout \
		--split test --json $(DEMO)/run/metrics.json
	@echo "outputs: data $(DEMO)/data (KITTI layout + bags), run $(DEMO)/run (config.yaml, checkpoints/," \
		"tensorboard/: tensorboard --logdir $(DEMO)/run), metrics $(DEMO)/run/metrics.json"

clean:
	rm -rf $(VENV) demo
