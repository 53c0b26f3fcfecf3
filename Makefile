# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed  # afresh: the previous demo's work folder is replaced
	rm -rf .modelcanary
	$(BIN)/modelcanary demo --workdir .modelcanary

# One worker a logical CPU, at most four ("auto" would count physical cores where psutil is
# installed); a test module's tests run on one worker, which shares their fixtures.
test: $(BIN)/.installed
	$(BIN)/python -m pytest --numprocesses logical --maxprocesses 4 --dist loadscope

clean:
	rm -rf $(VENV) .modelcanary .pytest_cache
