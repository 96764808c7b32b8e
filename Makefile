# swift-webpubsub — the two set-up commands are `make demo` and `make test`.
SWIFT      ?= swift
PYTHON3    ?= python3
VENV       := .venv
PY         := $(abspath $(VENV))/bin/python
BIN        := .build/debug
# The test suites written with async/await (see `test`).
ASYNC_SUITES := ConcurrencyTests|ConcurrencyDocExamplesTests|MetricsTests|ServiceLifecycleTests
# The Swift tests find the Python peers through this variable.
export WPS_PYTHON := $(PY)

.PHONY: all build venv test test-swift test-tsan leaks fuzz fuzz-smoke demo chaos soak soak-resources emulator emulator-tls emulator-load conformance conformance-ci bench consumer docs clean

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
	# The async suites run apart from the blocking ones, which park threads of the cooperative pool
	# (2 on this machine) while they wait: an async test beside them could starve for seconds.
	$(SWIFT) test --skip-build --skip WebSocketTests --skip "$(ASYNC_SUITES)"
	$(SWIFT) test --skip-build --filter "$(ASYNC_SUITES)"
	WPS_ISOLATED=1 $(SWIFT) test --skip-build --filter WebSocketTests
	$(MAKE) conformance-ci
	$(MAKE) consumer
	$(MAKE) fuzz-smoke

test-swift: venv
	$(SWIFT) test

## The client tests under the thread sanitizer.
test-tsan: venv
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	$(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan --filter WebPubSubTests --skip "$(ASYNC_SUITES)"
	$(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan --filter "$(ASYNC_SUITES)"

## Leaks and memory errors: 30 s of the chaos demo (client and emulator) and the TLS tests under
## AddressSanitizer and LeakSanitizer; fails on any report not suppressed in Tests/lsan.supp (toolchain leaks).
leaks: venv
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	export ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp; \
	.build-asan/debug/webpubsub-demo --emulator .build-asan/debug/webpubsub-emulator --chaos 30 --interval 2 \
	  > .build-asan/leaks.log 2>&1; demo=$$?; \
	$(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan --filter TLS >> .build-asan/leaks.log 2>&1; tests=$$?; \
	grep -E "RESULT|chaos over|passed after|failed after|Sanitizer|leak of" .build-asan/leaks.log; \
	if grep -q "ERROR: .*Sanitizer" .build-asan/leaks.log || [ $$demo -ne 0 ] || [ $$tests -ne 0 ]; then \
	  echo "leaks: FAILED (demo exit $$demo, tests exit $$tests; full log .build-asan/leaks.log)"; exit 1; fi; \
	echo "leaks: no leak or memory error in the demo, the emulator or the TLS tests"

## Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of every parser, FUZZ_SECONDS per target; prints
## executions, coverage and findings (inputs in .build-fuzz/findings/TARGET/); fails on any finding.
## FUZZ_TARGETS picks some of: frames handshake downstream client-message json-scanner odata token.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	Tests/Fuzz/fuzz.sh build
	Tests/Fuzz/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## The CI smoke: every target for 3 s (seeds included), so a harness that no longer builds or an oracle
## broken on the seeds fails the test run.
fuzz-smoke:
	Tests/Fuzz/fuzz.sh build
	Tests/Fuzz/fuzz.sh run 3

## The main job: the local emulator and a real client session against it.
demo:
	$(SWIFT) build
	$(BIN)/webpubsub-demo --emulator $(BIN)/webpubsub-emulator

## Chaos: 60 s of publishing while random clients get TCP resets, 1011 closes and pauses; exits 0 only when
## every acked message reached every receiver exactly once and in order.
chaos:
	$(SWIFT) build
	$(BIN)/webpubsub-demo --emulator $(BIN)/webpubsub-emulator --chaos 60 --interval 5

## Soak: the same for 15 minutes (release build), with the process's resident memory before and after,
## then the resource check below.
soak:
	$(SWIFT) build -c release
	.build/release/webpubsub-demo --emulator .build/release/webpubsub-emulator --chaos 900 --interval 2
	.build/release/webpubsub-demo --emulator .build/release/webpubsub-emulator --cycles $(SOAK_CYCLES)

## Resources of long runs: SOAK_CYCLES client open/join/send/close cycles; descriptors, threads and resident
## memory of the client process and the emulator process before and after; fails unless they end where they
## started.
SOAK_CYCLES ?= 10000
soak-resources:
	$(SWIFT) build -c release
	.build/release/webpubsub-demo --emulator .build/release/webpubsub-emulator --cycles $(SOAK_CYCLES)

## The emulator on Microsoft's defaults (port 8080).
emulator:
	$(SWIFT) run webpubsub-emulator

## The emulator with TLS: a throwaway CA and leaf (openssl, kept in .build/emulator-tls while valid), plain
## http/ws on 8080 and https/wss on 8443; prints how to trust the CA. More options: EMULATOR_ARGS="--entra-id accept-unvalidated".
EMULATOR_TLS := .build/emulator-tls
emulator-tls:
	$(SWIFT) build --product webpubsub-emulator
	sh Scripts/emulator-tls-ca.sh $(EMULATOR_TLS)
	$(BIN)/webpubsub-emulator --port 8080 --tls-port 8443 \
	  --tls-cert $(EMULATOR_TLS)/localhost.crt --tls-key $(EMULATOR_TLS)/localhost.key $(EMULATOR_ARGS)

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

## A user's daemon that depends on the WebPubSub product only (Examples/Consumer, `traits: []`), built from
## scratch; fails unless SwiftPM resolved and checked out swift-log alone (no SwiftNIO, no argument parser).
consumer:
	rm -rf Examples/Consumer/.build Examples/Consumer/Package.resolved
	cd Examples/Consumer && $(SWIFT) build
	cd Examples/Consumer && $(SWIFT) package show-dependencies
	@checkouts="$$(ls Examples/Consumer/.build/checkouts | tr '\n' ' ')"; echo "consumer checked out: $$checkouts"; \
	  if [ "$$checkouts" != "swift-log " ]; then echo "consumer: expected swift-log alone"; exit 1; fi
	Examples/Consumer/.build/debug/Consumer

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz Examples/Consumer/.build $(VENV)

## The DocC catalog of WebPubSub (Sources/WebPubSub/Documentation.docc), warnings as errors; output in .build/docs.
docs:
	$(SWIFT) package dump-symbol-graph --minimum-access-level public >/dev/null
	rm -rf .build/docs-symbols && mkdir -p .build/docs-symbols
	cp .build/*/symbolgraph/WebPubSub.symbols.json .build/*/symbolgraph/WebPubSub@*.symbols.json .build/docs-symbols/ 2>/dev/null || true
	docc convert Sources/WebPubSub/Documentation.docc --additional-symbol-graph-dir .build/docs-symbols \
	  --fallback-display-name WebPubSub --fallback-bundle-identifier org.swift-webpubsub.WebPubSub \
	  --output-dir .build/docs --warnings-as-errors
	@echo "docs: .build/docs (docc preview: docc preview Sources/WebPubSub/Documentation.docc --additional-symbol-graph-dir .build/docs-symbols)"
