# Entry points. Each target installs missing Debian packages first (scripts/bootstrap, which needs
# root or sudo), then configures, builds and runs with the CMake presets in CMakePresets.json.
JOBS ?= $(shell nproc)

.PHONY: all demo demo-protocol test test-dev test-asan bench load fuzz bootstrap clean

all: demo

bootstrap:
	@bash scripts/bootstrap

# The main job: a local sotto-server on the embedded default, alice and bob registering with the
# sotto CLI, messages both ways (one while bob is offline), the safety number both see, shutdown.
demo: bootstrap
	cmake --preset dev
	cmake --build --preset dev --target sotto-server sotto -j $(JOBS)
	python3 scripts/demo.py --bin build/dev

# The protocol alone, in one process (X3DH, ratchet with reordering, a Sender Key group).
demo-protocol: bootstrap
	cmake --preset dev
	cmake --build --preset dev --target sotto-demo -j $(JOBS)
	./build/dev/apps/sotto-demo/sotto-demo

# The whole suite, twice: the normal build, then AddressSanitizer + UndefinedBehaviorSanitizer.
# Unit, interop (label "interop"), fuzz-corpus replay (label "fuzz") and end-to-end tests over
# real processes (label "e2e": sotto-server and sotto built with the sanitizers in the asan run).
test: bootstrap test-dev test-asan

test-dev:
	cmake --preset dev
	cmake --build --preset dev -j $(JOBS)
	ctest --preset dev -j $(JOBS)

test-asan:
	cmake --preset asan
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

# Benchmarks against libsignal-protocol-c and libolm (release build); see bench/README.md.
bench: bootstrap
	cmake --preset release
	cmake --build --preset release --target sotto_bench -j $(JOBS)
	python3 bench/compare

# Server load test (release build): sotto-load spawns sotto-server on free ports with a temporary
# data directory and measures every phase; see bench/README.md, section "Load". LOAD_ARGS adds
# options (e.g. LOAD_ARGS=--json).
load: bootstrap
	cmake --preset release
	cmake --build --preset release --target sotto-server sotto-load -j $(JOBS)
	./build/release/apps/sotto-load/sotto-load --spawn-server build/release/apps/sotto-server/sotto-server $(LOAD_ARGS)

# libFuzzer targets (clang 14); see fuzz/README.md.
fuzz: bootstrap
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)

clean:
	rm -rf build
