# cfgrl: one target per stage. `make collect label train eval` installs everything (into .venv) and
# runs the main job on the built-in environment; `make test` runs the test suite.
#
#   ENV=builtin (default): a base policy is pre-trained by behaviour cloning on noisy scripted
#                          demonstrations (`make base`), then collect -> label -> train -> eval.
#   ENV=libero POLICY=DIR: the same stages on LIBERO from a real PI0 checkpoint (ours or lerobot's),
#                          with configs/libero.yaml.
#   ENV=libero alone:      the CPU demonstration (configs/libero_cpu.yaml): as builtin, a small base
#                          imitates LIBERO's scripted expert on three libero_spatial tasks.
#   ENV=metaworld:         Meta-World MT10 (configs/metaworld.yaml): as builtin, the base imitates
#                          Meta-World's own experts (`make base`); POLICY=DIR or scripted:NOISE replaces it.
#
# Every target prints where it wrote; re-running a target skips finished work (collect resumes to
# its count, label reuses an identical version, train and eval skip a finished run).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENV ?= builtin
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
ifeq ($(ENV)$(origin POLICY),liberoundefined)
CONFIG ?= configs/libero_cpu.yaml
endif
CONFIG ?= configs/$(ENV).yaml
DATA ?= data/$(ENV)
CFGRL := $(VENV)/bin/cfgrl
SETUP := $(VENV)/.cfgrl-setup

STORE := $(DATA)/rollouts.zarr
RUN := $(DATA)/cfgrl
EVAL := $(DATA)/eval

# Environments with scripted experts start from a base policy: behaviour cloning of a fresh policy on
# noisy expert demonstrations (`cfgrl base`), sized so that the base succeeds sometimes, not always.
# On LIBERO only without POLICY=DIR: a user's checkpoint needs no base.
SCRIPTED_ENVS := builtin metaworld $(if $(filter undefined,$(origin POLICY)),libero,)
ifneq ($(filter $(ENV),$(SCRIPTED_ENVS)),)
BASE := $(DATA)/base/policy
POLICY ?= $(BASE)
else
POLICY ?=
endif
POLICY_FLAG := $(if $(POLICY),--policy $(POLICY),)

# The demonstration's w sweep: the built-in env's adds w = 0 and 5 to the main job's. Meta-World's is
# w = 1, 1.5 and 2: an episode lasts up to 200 steps there and each w costs 200 episodes; in the
# recipe study validation chose w = 1.5 for its recipe and w = 1 for the old one, and w = 3 lost.
ifeq ($(ENV),metaworld)
DEMO_NOISE ?= 0.3
DEMO_EPISODES ?= 400
BASE_STEPS ?= 1500
DEMO_SCALES ?= [1, 1.5, 2]
# The recipe that lifted the base (README, "Meta-World"): every round and baseline also trains on the
# base's demonstrations, groups with one outcome are left out of training, and every training runs
# 8000 steps (the main job's configs/metaworld.yaml trains 2000); failed episodes are left out of ∅
# by configs/metaworld.yaml itself (the recipe study's choice, docs/results/metaworld-study.md).
DEMO_FLAGS ?= --keep-demos -o cfgrl.zero_variance_groups=drop -o train.steps=8000 -o train.decay_steps=8000
else ifeq ($(ENV),libero)
# An episode lasts up to 220 steps and each w costs 150 test episodes (3 tasks x 50 init states).
DEMO_NOISE ?= 0.3
DEMO_EPISODES ?= 150
BASE_STEPS ?= 1500
DEMO_SCALES ?= [1, 2]
DEMO_FLAGS ?=
else
DEMO_NOISE ?= 0.3
DEMO_EPISODES ?= 512
BASE_STEPS ?= 1500
DEMO_SCALES ?= [0, 1, 1.5, 2, 3, 5]
DEMO_FLAGS ?=
endif

.PHONY: help setup base collect value label train eval test docs bench wheelhouse round ablate demo spread clean-data

help:
	@sed -n '/^#/!q; s/^# \{0,1\}//; p' Makefile

setup: $(SETUP)

# torch first, and only if none is importable: a GPU box keeps the CUDA build it already has;
# TORCH_SPEC pins the CPU build on this project's machines (a bare `torch` can pull GBs of CUDA).
$(SETUP): pyproject.toml scripts/setup_libero.sh scripts/setup_metaworld.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,video,docs]"
	scripts/setup_libero.sh $(VENV)
	scripts/setup_metaworld.sh $(VENV)
	touch $@
	@echo "setup: installed into $(VENV)"

ifneq ($(filter $(ENV),$(SCRIPTED_ENVS)),)
base: $(BASE)/config.json

$(BASE)/config.json: | $(SETUP)
	$(CFGRL) base $(DATA) --demo-noise $(DEMO_NOISE) --demo-episodes $(DEMO_EPISODES) --base-steps $(BASE_STEPS) -c $(CONFIG)
	@echo "base: base policy in $(BASE)"

collect: base
else
base:
	@echo "base: ENV=$(ENV) uses POLICY=$(if $(POLICY),$(POLICY),<a fresh tiny random policy: it will not learn>)"

collect: | $(SETUP)
endif
	$(CFGRL) collect $(STORE) $(POLICY_FLAG) -c $(CONFIG)
	@echo "collect: episodes in $(STORE)"

# RECAP's value model of the store, for `cfgrl label --value $(VALUE) -o cfgrl.label_source=value`.
VALUE := $(DATA)/value
value: | $(SETUP)
	@if [ -e $(VALUE)/manifest.json ]; then echo "value: skip, $(VALUE) is finished (remove it to retrain)"; \
	else $(CFGRL) value $(STORE) --out $(VALUE) -c $(CONFIG); fi
	@echo "value: values, models and calibration plot in $(VALUE)"

label: | $(SETUP)
	$(CFGRL) label $(STORE) -c $(CONFIG)
	@echo "label: versions in $(STORE:.zarr=.labels)"

train: | $(SETUP)
	@if [ -e $(RUN)/policy/config.json ]; then echo "train: skip, $(RUN)/policy is finished (remove $(RUN) to retrain)"; \
	else $(CFGRL) train $(STORE) --labels $(STORE) $(POLICY_FLAG) --out $(RUN) -c $(CONFIG) \
	  $$( [ -e $(RUN)/last ] && echo --resume ); fi
	@echo "train: policy in $(RUN)/policy"

eval: | $(SETUP)
	$(CFGRL) evaluate $(RUN)/policy $(if $(POLICY),--baseline $(POLICY),) --out $(EVAL) -c $(CONFIG)
	@echo "eval: results, table and plot in $(EVAL)"

ifneq ($(filter $(ENV),$(SCRIPTED_ENVS)),)
round ablate: base
endif
round: | $(SETUP)
	$(CFGRL) round $(DATA)/rounds $(POLICY_FLAG) -c $(CONFIG)
	@echo "round: rounds and their lineage in $(DATA)/rounds"

ablate: collect
	$(CFGRL) ablate $(STORE) $(POLICY_FLAG) --out $(DATA)/ablate -c $(CONFIG)
	@echo "ablate: table and plot in $(DATA)/ablate"

# The demonstration: the main job's configuration, its own w sweep (DEMO_SCALES above).
demo: | $(SETUP)
	$(CFGRL) demo $(DATA)/demo --demo-noise $(DEMO_NOISE) --demo-episodes $(DEMO_EPISODES) --base-steps $(BASE_STEPS) \
	  -c $(CONFIG) $(if $(DEMO_SCALES),-o 'evaluate.cfg_scales=$(DEMO_SCALES)',) $(DEMO_FLAGS)
	@echo "demo: report in $(DATA)/demo/report.md"

# The demonstration's comparison (CFGRL at the validation-chosen w, filtered BC, weighted) over 3 seeds
# of collection, condition dropout and training, from the main job's base: mean and spread. Not in CI.
SEEDS ?= 0,1,2
spread: base
	$(CFGRL) spread $(DATA)/spread $(POLICY_FLAG) --seeds $(SEEDS) -c $(CONFIG)
	@echo "spread: report in $(DATA)/spread/report.md"

test: | $(SETUP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=25   # the 25 slowest tests, to keep CI in budget

# The documentation site: regenerate the reference (from the code) and results pages (from the artefacts
# under docs/results/), then build strictly into site/ (not --quiet: it hides the warnings --strict counts).
# NO_MKDOCS_2_WARNING: Material >= 9.7 prints a banner about MkDocs 2 on every build otherwise.
docs: | $(SETUP)
	$(VENV)/bin/python scripts/docs_reference.py
	$(VENV)/bin/python scripts/docs_results.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/python -m mkdocs build --strict --site-dir site
	@echo "docs: site in site/ (open site/index.html)"

# Every script's figures also go to $(BENCH_OUT)/<script>.json (bench/_common.py); the docs' benchmarks page is
# rendered from the ones copied into docs/results/benchmarks/. gpu_check.py needs a GPU machine (bench/gpu_check.sh;
# bench/README.md says how to run it there); bench/_*.py are helpers, not benches.
BENCH_OUT ?= data/bench
bench: | $(SETUP)
	for b in $(filter-out bench/gpu_check.py bench/_%,$(wildcard bench/*.py)); do echo "== $$b"; \
	  $(VENV)/bin/python $$b --json $(BENCH_OUT)/$$(basename $$b .py).json; done
	@echo "bench: figures in $(BENCH_OUT)/*.json (copy them into docs/results/benchmarks/ to publish them, then make docs)"

# The wheels a lent GPU machine lacks (it has no network, and torch and the rest already): zarr 3 and
# its dependencies, at the versions installed in $(VENV), for CPython $(WHEEL_PYTHON) on manylinux x86_64.
# bench/gpu_check.sh installs them from $(WHEELHOUSE), which the device call carries (ignored by git).
WHEELHOUSE ?= .whl
WHEEL_PYTHON ?= 3.12
WHEELS := zarr numcodecs donfig google-crc32c
wheelhouse: | $(SETUP)
	rm -f $(WHEELHOUSE)/*.whl  # one version of each: two would stop the install there
	$(VENV)/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
	  --python-version $(WHEEL_PYTHON) --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(WHEELHOUSE) \
	  $$($(VENV)/bin/python -c "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in '$(WHEELS)'.split()))")
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1), in $(WHEELHOUSE)"

clean-data:
	rm -rf $(DATA)
