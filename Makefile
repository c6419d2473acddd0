# otel-ebpf — see README.md. `make run` and `make test` are the two commands.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLANG ?= clang
ARCH := x86
TRACERS := $(notdir $(patsubst %/,%,$(dir $(wildcard bpf/*/*.bpf.c))))
BPF_OBJ := $(foreach t,$(TRACERS),src/otel_ebpf/bpf/objects/$(t).bpf.o)
APT_PACKAGES := clang llvm libbpf-dev libbpf1 bpftool make curl wrk nghttp2-client nghttp2-server nginx-light dnsmasq-base iptables iproute2 bind9-dnsutils

.PHONY: setup run test bench bpf clean vmlinux system-deps venv tracefs

setup: system-deps venv bpf tracefs

# Debian packages (idempotent: only installs what is missing).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

bpf: $(BPF_OBJ)

.SECONDEXPANSION:
src/otel_ebpf/bpf/objects/%.bpf.o: bpf/$$*/$$*.bpf.c bpf/$$*/$$*.h $(wildcard bpf/include/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) -O2 -g -Wall -Werror=uninitialized -Werror=sometimes-uninitialized -target bpf -D__TARGET_ARCH_$(ARCH) -Wno-gnu-variable-sized-type-not-at-end -Ibpf/include -c $< -o $@
	llvm-strip -g --keep-section=.BTF --keep-section=.BTF.ext $@ 2>/dev/null || true

# Regenerate the pinned vmlinux.h from this machine's BTF (not part of setup).
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/vmlinux.h

tracefs:
	@test -d /sys/kernel/tracing/events || mount -t tracefs nodev /sys/kernel/tracing || \
	  { echo "cannot mount tracefs at /sys/kernel/tracing: run as root"; exit 1; }

run: setup
	$(VENV)/bin/otel-ebpf run

test: setup
	$(PY) -m pytest -q -ra

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf src/otel_ebpf/bpf/objects/*.bpf.o build dist
