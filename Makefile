# swift-webpubsub — the two set-up commands are `make demo` and `make test`.
SWIFT      ?= swift
PYTHON3    ?= python3
VENV       := .venv
PY         := $(abspath $(VENV))/bin/python
BIN        := .build/debug
# The Swift tests find the Python peers through this variable.
export WPS_PYTHON := $(PY)

.PHONY: all build venv test test-swift test-tsan demo chaos soak emulator emulator-load conformance conformance-ci bench clean

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
	WPS_ISOLATED=1 $(SWIFT) test --skip-build --filter WebSocketTests
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

## Chaos: 60 s of publishing while random clients get TCP resets, 1011 closes and pauses; exits 0 only when
## every acked message reached every receiver exactly once and in order.
chaos:
	$(SWIFT) build
	$(BIN)/webpubsub-demo --emulator $(BIN)/webpubsub-emulator --chaos 60 --interval 5

## Soak: the same for 15 minutes (release build), with the process's resident memory before and after.
soak:
	$(SWIFT) build -c release
	.build/release/webpubsub-demo --emulator .build/release/webpubsub-emulator --chaos 900 --interval 2

## The emulator on Microsoft's defaults (port 8080).
emulator:
	$(SWIFT) run webpubsub-emulator

## The emulator's loopback fan-out rate (release build), reliable and plain JSON receivers.
emulator-load:
	$(SWIFT) build -c release --product webpubsub-emulator
	.build/release/webpubsub-emulator load --receivers 100 --messages 2000 --reliable-buffer-messages 100000
	.build/release/webpubsub-emulator load --receivers 100 --messages 2000 --non-reliable

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
