# Every target sets itself up: a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench reliability lint mpy ports clean setup sysdeps screens

setup: $(STAMP)

# One line per step: the pip steps are quiet and take a minute on a fresh machine.
$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) ($(PYTHON) -m venv)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup: upgrading pip in $(VENV) (pip install --upgrade pip)"
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "setup: installing the project and its tools into $(VENV) (pip install -e '.[test]', about a minute)"
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@echo "setup: the ESP32 and ESP8266 API stubs (tools/portcheck.py --install)"
	@$(BIN)/python -m tools.portcheck --install
	@touch $(STAMP)
	@echo "setup: done; the host command line is $(BIN)/ias"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Compile every firmware module the way the device will load it: MicroPython's own syntax rules.
mpy: $(STAMP)
	$(BIN)/python -m tools.deploy --check-compile

# What the firmware calls on the ESP32 and ESP8266, checked against each port's API stubs with
# pyright (also a test: tests/test_port_apis.py).
ports: $(STAMP)
	$(BIN)/python -m tools.portcheck

# The Debian packages the tests run (nginx, chromium, faketime): apt-get installs what is missing.
sysdeps:
	@$(PYTHON) tools/sysdeps.py

test: sysdeps lint mpy
	$(BIN)/pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/ias demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The whole reliability matrix, slow sweeps included; rewrites docs/reliability.md from the run.
reliability: $(STAMP)
	$(BIN)/python -m tools.reliability

# The config page's screenshots in docs/screens/ (a test run puts them in test-artifacts/).
screens: $(STAMP)
	IAS_SCREENS=docs $(BIN)/pytest -q tests/test_config_browser.py -k screenshots

clean:
	rm -rf $(VENV) build .pytest_cache
