# ctok: the commands a user and CI run. Each installs what is missing (Debian 12, as root).
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
DEB_DEPS = cmake gcc make pkg-config openssl libssl-dev libjansson-dev libp11-kit-dev \
           libcurl4-openssl-dev python3-pytest python3-cryptography clang-format \
           softhsm2 opensc valgrind nginx apache2-bin curl gnutls-bin \
           clang clang-tools libclang-rt-dev

.PHONY: all deps build demo test bench install check-format format clean fuzz-build fuzz \
        fuzz-regress

all: build

deps:
	@missing=$$(for p in $(DEB_DEPS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing missing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCTOK_WERROR=ON
	cmake --build $(BUILD) -j$$(nproc)

demo: build
	bash tests/demo.sh $(BUILD)

test: build
	CTOK_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest tests -q -p no:cacheprovider

bench: build
	$(PYTHON) bench/run.py --build $(BUILD)

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
fuzz-regress: build fuzz-build
	CTOK_BUILD_DIR=$(abspath $(BUILD)) bash tests/fuzz/run.sh $(FUZZ_BUILD) regress

install: build
	cmake --install $(BUILD)

SOURCES = $$(git ls-files '*.c' '*.h' | grep -v '^tests/')

check-format:
	clang-format --dry-run --Werror $(SOURCES)

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD)
