# swift-webpubsub — the two set-up commands are `make demo` and `make test`.
SWIFT      ?= swift
PYTHON3    ?= python3
VENV       := .venv
PY         := $(abspath $(VENV))/bin/python
BIN        := .build/debug
# The Swift tests find the Python peers through this variable.
export WPS_PYTHON := $(PY)

.PHONY: all build venv test test-swift test-tsan demo conformance conformance-ci bench soak chaos clean

all: build

build:
	$(SWIFT) build

venv: $(VENV)/.stamp

$(VENV)/.stamp: Tests/Peers/requirements.txt
	$(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r Tests/Peers/requirements.txt
	touch $@

## The whole test suite: Swift tests (unit, real Python peers, TLS, emulator, client) and Autobahn 1–7, 10.
test: venv
	$(SWIFT) build --build-tests
	# WebSocketTests count the process's descriptors and threads: run them in a process of their own.
	$(SWIFT) test --skip-build --skip WebSocketTests
	$(SWIFT) test --skip-build --filter WebSocketTests
	$(MAKE) conformance-ci

test-swift: venv
	$(SWIFT) test

## The client tests under the thread sanitizer.
test-tsan: venv
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan --filter WebPubSubTests

## The main job: the local emulator and a real client session against it.
demo:
	$(SWIFT) build
	$(BIN)/webpubsub-demo --emulator $(BIN)/webpubsub-emulator

## Autobahn conformance (kosoku fuzzing server on loopback), full: categories 1–7, 9, 10.
conformance: venv
	$(SWIFT) build --product autobahn-client
	$(PY) Tests/Peers/conformance.py --client $(BIN)/autobahn-client --exclude '12.*' --exclude '13.*' --summary Docs/Conformance.md

## The CI subset: categories 1–7 and 10.
conformance-ci: venv
	$(SWIFT) build --product autobahn-client
	$(PY) Tests/Peers/conformance.py --client $(BIN)/autobahn-client --exclude '9.*' --exclude '12.*' --exclude '13.*'

## Side-by-side benchmarks (release build): our client and the Python SDK against one emulator.
bench: venv
	$(SWIFT) build -c release
	.build/release/webpubsub-bench --emulator .build/release/webpubsub-emulator --python $(PY)

clean:
	rm -rf .build .build-tsan $(VENV)
