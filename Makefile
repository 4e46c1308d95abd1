# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever the dependency files change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

# The Jetson Nano's software (JetPack 4.6: Python 3.6, torch 1.10, transformers 4.18), built once
# outside the clone from pyenv's Python 3.6.15, so that the agent is tested on it.
JETSON_STACK ?= $(HOME)/.cache/farm/jetson-py36
PY36 := $(or $(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)/versions/3.6.15/bin/python3.6

.PHONY: install demo demo-stream demo-methods demo-glue test clean jetson-stack sshd uml-kernel postgres

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls several GB of CUDA packages.
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'
	# Compiled here on every core, not file by file as pip does (68 s of one core against 40 s
	# of two, on a 2-core machine here). A few files are not for this Python (torch's tests of
	# 3.12's syntax) and fail, as they do in pip's own pass, where they are silently skipped.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/farm submit examples/sweep.yaml --inventory inventory.yaml

# Streamed layers against eager in 2 GiB, 1 GiB and 512 MiB containers (README: "Streaming layers").
demo-stream: install
	$(BIN)/farm submit examples/stream.yaml --inventory examples/stream-inventory.yaml

# Pruned heads and low-rank factorization against eager fp32 (README: "Variants and methods").
demo-methods: install
	$(BIN)/farm submit examples/methods.yaml --inventory inventory.yaml

# The GLUE baselines sweep on a toy GLUE sample written here (dev files in GLUE's layout, a tiny
# BERT per task trained in seconds): its scores prove the pipeline, not a model (README: "GLUE
# accuracy").
demo-glue: install
	$(BIN)/python examples/glue_sample.py
	$(BIN)/farm submit examples/glue-baselines.yaml --inventory inventory.yaml

# farm's own modules compiled first, as a user's first command leaves them: where
# PYTHONDONTWRITEBYTECODE is set (as in this project's shells), every farm command and
# agent that the tests start would compile them again.
test: install jetson-stack sshd uml-kernel postgres
	$(BIN)/python -m compileall -q farm agents
	FARM_JETSON_PYTHON=$(JETSON_STACK)/bin/python $(BIN)/python -m pytest

# The cgroup v2 tests' kernel: user-mode Linux 6.1, built once from Debian's linux-source-6.1
# into ~/.cache/farm/uml/ (tests/uml_kernel.py names the folder by the hash of tests/uml/).
uml-kernel: install
	@$(BIN)/python tests/uml_kernel.py build

# The SSH tests start their own OpenSSH sshd on 127.0.0.1 (Debian's openssh-server; only
# installed here, never started as a system service), and `farm status` is tested in tmux.
sshd:
	@if [ -x /usr/sbin/sshd ] && command -v tmux >/dev/null; then \
	  echo "sshd: /usr/sbin/sshd, tmux: $$(command -v tmux)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q openssh-server tmux >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q openssh-server tmux >/dev/null; }; \
	else \
	  echo "note: no sshd or tmux here (apt-get install openssh-server tmux); those tests will not run"; \
	fi

# The PostgreSQL tests start their own server (Debian's postgresql, installed here) on 127.0.0.1
# in a temporary data directory; the package's own cluster is never used.
postgres:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "postgres: $$(ls /usr/lib/postgresql/*/bin/postgres | tail -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q postgresql >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }; \
	else \
	  echo "note: no PostgreSQL here (apt-get install postgresql); its tests will not run"; \
	fi

jetson-stack:
	@if $(JETSON_STACK)/bin/python -c "import torch, transformers" 2>/dev/null; then \
	  echo "Jetson stack: $(JETSON_STACK)"; \
	elif [ -x "$(PY36)" ]; then \
	  rm -rf $(JETSON_STACK) && $(PY36) -m venv $(JETSON_STACK) && \
	  $(JETSON_STACK)/bin/python -m pip install -q --upgrade "pip<22" && \
	  $(JETSON_STACK)/bin/python -m pip install -q torch==1.10.2 transformers==4.18.0; \
	else \
	  echo "note: no Python 3.6.15 from pyenv here; the Jetson-stack test will not run"; \
	fi

clean:
	rm -rf $(VENV) farm.db farm.db-wal farm.db-shm
