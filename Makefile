# gitmetal — build, run and test. `make help` lists the targets.

GO        ?= go
BIN       := bin/gitmetal
LISTEN    ?= 127.0.0.1:8080
STATE_DIR ?= .state
FUZZTIME  ?= 10s

IPXE_CACHE ?= .cache/ipxe
IPXE_DIR   ?= $(IPXE_CACHE)/bin

INSTALLER_DIR        ?= installer
INSTALLER_MODULES    ?=
INSTALLER_FIRMWARE   ?=
INSTALLER_KERNEL_ABI ?=
INSTALLER_BUSYBOX    ?=

.PHONY: help build run deps test vet fmt-check lint fuzz bench clean ipxe installer e2e demo

# Where .ci/deps unpacks cloud-init's code for hegel's tests.
GITMETAL_CLOUDINIT_PYTHONPATH ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gitmetal/cloud-init/root/usr/lib/python3/dist-packages
export GITMETAL_CLOUDINIT_PYTHONPATH

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/gitmetal
	$(GO) build -o $(BIN) ./cmd/gitmetal

run: build ## start gitmetal on the bundled example fleet (Ctrl-C stops it)
	$(BIN) serve --repo examples/fleet --listen $(LISTEN) --state-dir $(STATE_DIR) --log-format console

deps: ## install the Debian packages the tests use (as root), unpack cloud-init for hegel's tests
	.ci/deps

test: deps vet fmt-check ## everything CI runs: vet, gofmt, go test -race, a short fuzz
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

lint: vet fmt-check ## go vet and gofmt

fuzz: ## run each fuzz target briefly (FUZZTIME=10s)
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./schema/
	$(GO) test -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime $(FUZZTIME) ./schema/tinkerbell/
	$(GO) test -run '^$$' -fuzz '^FuzzServe$$' -fuzztime $(FUZZTIME) ./hegel/
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./boot/dhcp/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./boot/dhcp/

bench: build ## print the benchmark tables (see README)
	$(GO) run ./test/bench
	$(GO) run ./test/bench/reconcile
	$(GO) run ./hegel/bench
	$(GO) run ./test/tftpload
	$(GO) run ./test/dhcpload/bench
	$(GO) run ./agent/actions/bench
	$(GO) run ./agent/initramfs/bench -installer installer

ipxe: $(IPXE_DIR)/ipxe.efi ## iPXE binaries from Debian's ipxe package into .cache/ipxe/bin

# The binaries come from Debian's ipxe package: copied when it is installed,
# else downloaded with apt-get and unpacked, never fetched at run time. In
# the .deb, ipxe.efi lives in /boot (the /usr/lib/ipxe copy is a link).
$(IPXE_DIR)/ipxe.efi:
	@mkdir -p $(IPXE_DIR) $(IPXE_CACHE)/deb
	@if [ -f /usr/lib/ipxe/ipxe.efi ]; then \
		cp -L /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi $(IPXE_DIR)/; \
	else \
		rm -rf $(IPXE_CACHE)/deb/* && (cd $(IPXE_CACHE)/deb && apt-get download ipxe) && \
		dpkg -x $(IPXE_CACHE)/deb/ipxe_*.deb $(IPXE_CACHE)/deb/root && \
		cp $(IPXE_CACHE)/deb/root/usr/lib/ipxe/undionly.kpxe $(IPXE_CACHE)/deb/root/usr/lib/ipxe/snponly.efi $(IPXE_DIR)/ && \
		cp $(IPXE_CACHE)/deb/root/boot/ipxe.efi $(IPXE_DIR)/ipxe.efi; \
	fi

installer: ## build installer/vmlinuz and installer/initramfs.cpio.gz (drivers: see installer/README.md)
	$(GO) run ./agent/initramfs/build -out $(INSTALLER_DIR) \
		-modules "$(INSTALLER_MODULES)" -firmware "$(INSTALLER_FIRMWARE)" \
		$(if $(INSTALLER_KERNEL_ABI),-abi $(INSTALLER_KERNEL_ABI)) $(if $(filter 1 yes true,$(INSTALLER_BUSYBOX)),-busybox)

e2e: deps ipxe installer ## the story end to end: BIOS and UEFI VMs provisioned from git commits, and a Debian VM with cloud-init (root; ~7 min)
	GITMETAL_E2E=1 $(GO) test -count=1 -timeout 30m -v -run '^TestE2E$$' ./test/e2e/

demo: ipxe installer ## one VM provisioned from a local git repository, left running to watch (Ctrl-C ends it)
	GITMETAL_DEMO=1 $(GO) test -count=1 -timeout 0 -v -run '^TestDemo$$' ./test/e2e/

clean:
	rm -rf bin $(STATE_DIR)
