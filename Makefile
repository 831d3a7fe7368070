# ctok: the commands a user and CI run. Each installs what is missing (Debian 12, as root).
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
# What ctok.so and the tool need at run time (the -dev packages below pull them in too); the
# p11-kit library, not the p11-kit package, whose trust module every pkcs11: URI search would see
RUNTIME_DEPS = openssl libssl3 libcurl4 libjansson4 libp11-kit0
# What building needs: `make build` and `make install` install only these and RUNTIME_DEPS
BUILD_DEPS = cmake gcc make pkg-config libssl-dev libjansson-dev libp11-kit-dev \
             libcurl4-openssl-dev scdoc
# What the demo, the tests and the checked builds need besides
TEST_DEPS = python3-pytest python3-pytest-xdist python3-cryptography python3-boto3 clang-format \
            softhsm2 opensc valgrind nginx apache2-bin curl gnutls-bin groff-base \
            openssh-client openssh-server openjdk-17-jdk-headless libnss3-tools \
            clang clang-tools libclang-rt-dev libasan8 libubsan1 libtsan2 util-linux time gdb
DEB_DEPS = $(RUNTIME_DEPS) $(BUILD_DEPS) $(TEST_DEPS)

.PHONY: all deps build-deps test-deps build demo test bench bench-readme install uninstall \
        check-format format clean \
        test-sanitize test-valgrind test-tsan scan fuzz-build fuzz fuzz-regress deb test-package

all: build

# $(call apt_install,PACKAGES): those of PACKAGES not installed yet
apt_install = @missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing missing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deps:
	$(call apt_install,$(DEB_DEPS))

build-deps:
	$(call apt_install,$(RUNTIME_DEPS) $(BUILD_DEPS))

# What the tests need beyond deps: the official Azure SDKs from npm that prove the Key Vault
# emulator's fidelity (tests/test_akv_emulator.py), installed exactly as package-lock.json says
# (Node.js >= 20 and npm on PATH). Reinstalled when the lock file changes.
AZURE_SDK = tests/azure-sdk
$(AZURE_SDK)/node_modules/.package-lock.json: $(AZURE_SDK)/package.json $(AZURE_SDK)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 20) is needed for $(AZURE_SDK)"; exit 1; }
	cd $(AZURE_SDK) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test-deps: deps $(AZURE_SDK)/node_modules/.package-lock.json

build: build-deps
	cmake -S . -B $(BUILD) -DCTOK_WERROR=ON
	cmake --build $(BUILD) -j$$(nproc)

demo: build deps
	bash tests/demo.sh $(BUILD)

test: build test-deps
	CTOK_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest tests -q -p no:cacheprovider

# Checked runs (tests/ctoktest.py "checked runs"): any sanitizer or valgrind report fails the
# test during which it appeared. Host programs are not instrumented, so the runtime is
# LD_PRELOADed into every process the suite starts. The ASan and valgrind runs are CPU-bound
# and single-threaded per test: they spread test modules over every core (pytest-xdist; each
# worker has its own report directory), which halves CI's longest step on 2 cores.
CHECKED_JOBS ?= $$(nproc)
ASAN_BUILD  ?= build-asan
TSAN_BUILD  ?= build-tsan
ASAN_RT      = $$(gcc -print-file-name=libasan.so)
TSAN_RT      = $$(gcc -print-file-name=libtsan.so)
# The suite's concurrency tests: threaded signing (p11_sign_loop, bench driver) and forks.
TSAN_TESTS  ?= tests/test_threads.py tests/test_p11_faults.py tests/test_p11_crypto.py \
               tests/test_kms_call.py tests/test_p11mod_crypto.py \
               tests/test_p11mod_slots.py tests/test_p11mod_api.py tests/test_p11mod_fork.py
# Not test_children_forked_while_threads_sign: its children fork off eight threads in the middle
# of module calls, and TSan does not model fork(): glibc reclaiming the parent threads' stacks
# (their __thread variables) and the child handler making the module's lock new are reported
# against those threads' last accesses, in about one run of two. test_p11mod_fork covers a fork
# while a thread holds a slot, and runs here.
TSAN_SELECT ?= (thread or fork or child) and not test_children_forked_while_threads_sign
# The openssl CLI runs through ctok's decoder, lookup and signing here; valgrind sees what
# libcrypto writes into ctok's buffers, which ASan cannot.
VALGRIND_TESTS ?= tests/test_sign.py tests/test_store.py tests/test_bad_input.py \
                  tests/test_cli_keys.py::test_ref_gives_a_key_reference_that_signs_with_the_token_key \
                  tests/test_p11_zeroconf.py::test_hostile_pkcs11_provider_pem_fails_cleanly \
                  tests/test_p11_zeroconf.py::test_pkcs11_provider_key_reference_pem_signs \
                  tests/test_p11_conform_mech.py::test_dgst_sign_uses_the_allowed_mechanism_and_verifies \
                  tests/test_p11_conform_misc.py::test_pkey_text_of_token_private_key_prints_public_part

test-sanitize: test-deps
	cmake -S . -B $(ASAN_BUILD) -DCTOK_WERROR=ON -DCTOK_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$$(nproc)
	CTOK_BUILD_DIR=$(abspath $(ASAN_BUILD)) CTOK_SANITIZE_RUNTIME=$(ASAN_RT) \
	  $(PYTHON) -m pytest tests -q -p no:cacheprovider -n $(CHECKED_JOBS) --dist loadfile

test-valgrind: build test-deps
	CTOK_BUILD_DIR=$(abspath $(BUILD)) CTOK_VALGRIND=1 \
	  $(PYTHON) -m pytest $(VALGRIND_TESTS) -q -p no:cacheprovider -n $(CHECKED_JOBS) --dist loadfile

# gcc's ThreadSanitizer: its runtime is a shared library that can be preloaded into openssl
# (clang 14 links its TSan runtime statically into executables only).
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCTOK_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
	  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread \
	  -DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=thread
	cmake --build $(TSAN_BUILD) -j$$(nproc)
	CTOK_BUILD_DIR=$(abspath $(TSAN_BUILD)) CTOK_SANITIZE_RUNTIME=$(TSAN_RT) \
	  CTOK_SANITIZE_CFLAGS=-fsanitize=thread \
	  $(PYTHON) -m pytest $(TSAN_TESTS) -k "$(TSAN_SELECT)" -q -p no:cacheprovider

# clang's static analyzer over a fresh build of everything; any finding fails.
scan: deps
	rm -rf build-scan
	scan-build -o build-scan/report cmake -S . -B build-scan -DCTOK_WERROR=ON
	scan-build -o build-scan/report --status-bugs -analyze-headers \
	  cmake --build build-scan -j$$(nproc)

# about 10 minutes on 2 cores; shorter: make bench BENCH_ARGS="--only hsm --hsm-rounds 3"
BENCH_ARGS ?=
bench: build deps
	$(PYTHON) bench/run.py --build $(BUILD) --markdown bench/results.md $(BENCH_ARGS)

# README.md's performance section from the last run's bench/results.md (commit both)
bench-readme:
	$(PYTHON) bench/paste_results.py bench/results.md README.md

# libFuzzer targets (tests/fuzz): a clang build of their own, FUZZ_SECONDS each (CI: 10).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

fuzz-build: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCTOK_FUZZ=ON -DCTOK_WERROR=ON
	cmake --build $(FUZZ_BUILD) -j$$(nproc) --target fuzz_all

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh $(FUZZ_BUILD) fuzz

# every committed corpus and regression input once (the PEM ones also under valgrind
# through the normal build's ctok.so): a minute, for each CI run
fuzz-regress: build deps fuzz-build
	CTOK_BUILD_DIR=$(abspath $(BUILD)) bash tests/fuzz/run.sh $(FUZZ_BUILD) regress

# PREFIX=/usr puts ctok.so into OpenSSL's own modules directory; any other prefix into
# PREFIX/lib/ossl-modules (README "Install"). uninstall removes what install_manifest.txt lists.
install: build-deps
	cmake -S . -B $(BUILD) -DCTOK_WERROR=ON -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	cmake --build $(BUILD) -j$$(nproc)
	cmake --install $(BUILD)

uninstall:
	cmake -DMANIFEST=$(abspath $(BUILD))/install_manifest.txt -P cmake/uninstall.cmake

# The Debian package (debian/), built from a copy of the tracked files in $(DEB_DIR)/ctok so
# that dpkg-buildpackage's output (it writes into the parent directory) lands in $(DEB_DIR):
# $(DEB_DIR)/ctok_<version>_<arch>.deb. Build-Depends come from debian/control (apt-get
# build-dep); lintian fails the build on errors and prints its warnings.
DEB_DIR  ?= build-deb
DEB_TOOLS = build-essential dpkg-dev debhelper fakeroot lintian

deb:
	$(call apt_install,$(DEB_TOOLS))
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/ctok
	git ls-files -z | tar --null -T - -cf - | tar -C $(DEB_DIR)/ctok -xf -
	cd $(DEB_DIR)/ctok && { dpkg-checkbuilddeps 2>/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq ./; }; }
	cd $(DEB_DIR)/ctok && dpkg-buildpackage -us -uc -b -j$$(nproc)
	lintian --info --display-info $(DEB_DIR)/ctok_*.changes

# CI's "package" step (root): installs the .deb, runs the demo against the installed files,
# removes and purges it, and checks that nothing of it is left outside /etc/ctok.
test-package: deb
	bash tests/package_test.sh $(DEB_DIR)

SOURCES = $$(git ls-files '*.c' '*.h' | grep -v '^tests/')

check-format:
	clang-format --dry-run --Werror $(SOURCES)

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD)
