#!/usr/bin/env bash
# libFuzzer harnesses of the parsers (Docs/Reliability.md).
#   Tests/Fuzz/fuzz.sh build            compile the three fuzzer binaries into .build-fuzz/
#   Tests/Fuzz/fuzz.sh run SECONDS [T…]  run each target (all by default) for SECONDS, print a summary
# Each binary is the module's pure protocol files compiled together with its harness file (so the
# harness reaches internal types) with -sanitize=fuzzer,address; no SwiftPM and no SwiftNIO involved.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.build-fuzz
SWIFTC=${SWIFTC:-swiftc}
FLAGS=(-parse-as-library -O -g -sanitize=fuzzer,address -swift-version 6)

TARGETS=(frames handshake downstream client-message json-scanner odata token)
binary_of() {
    case "$1" in
        frames|handshake) echo fuzz-websocket ;;
        downstream) echo fuzz-client ;;
        *) echo fuzz-emulator ;;
    esac
}

build() {
    mkdir -p "$OUT/modules"
    local ws=Sources/WebSocket emu=Sources/WebPubSubEmulator cl=Sources/WebPubSub
    local wsfiles=("$ws/Frame.swift" "$ws/Handshake.swift" "$ws/UTF8Validator.swift" "$ws/WebSocketError.swift"
                   "$ws/WebSocketStateMachine.swift" "$ws/WebSocketTypes.swift")
    local start=$SECONDS
    # The WebSocket harness, and a WebSocket module of the same files for the client's `import WebSocket`.
    "$SWIFTC" "${FLAGS[@]}" -module-name WebSocket -I Modules/CSSL "${wsfiles[@]}" Tests/Fuzz/Harnesses/FuzzWebSocket.swift \
        -o "$OUT/fuzz-websocket" -lssl -lcrypto 2> >(grep -v "ld.gold: warning" >&2) &
    local p1=$!
    "$SWIFTC" "${FLAGS[@]}" -module-name WebSocket -I Modules/CSSL -emit-library -static -emit-module \
        -emit-module-path "$OUT/modules/WebSocket.swiftmodule" "${wsfiles[@]}" -o "$OUT/modules/libWebSocket.a"
    # The decoder and what it needs; the error type's transient-name table moves to Core/ProtocolRules.swift
    # with the client core's redesign, so it is taken when it exists.
    local clfiles=("$cl/Messages.swift" "$cl/JSON.swift" "$cl/MessageContent.swift" "$cl/WebPubSubError.swift")
    [ ! -f "$cl/Core/ProtocolRules.swift" ] || clfiles+=("$cl/Core/ProtocolRules.swift")
    "$SWIFTC" "${FLAGS[@]}" -module-name WebPubSub -I Modules/CSSL -I "$OUT/modules" "${clfiles[@]}" \
        Tests/Fuzz/Harnesses/FuzzClient.swift -o "$OUT/fuzz-client" -L "$OUT/modules" -lWebSocket -lssl -lcrypto \
        2> >(grep -v "ld.gold: warning" >&2)
    "$SWIFTC" "${FLAGS[@]}" -module-name WebPubSubEmulator -I Modules/CSSL \
        "$emu/AccessToken.swift" "$emu/Crypto.swift" "$emu/JSONScanner.swift" "$emu/Messages.swift" \
        "$emu/ODataFilter.swift" "$emu/Permissions.swift" \
        Tests/Fuzz/Harnesses/FuzzEmulator.swift -o "$OUT/fuzz-emulator" -lssl -lcrypto 2> >(grep -v "ld.gold: warning" >&2)
    wait $p1
    echo "fuzz: built $OUT/fuzz-websocket, fuzz-client, fuzz-emulator in $((SECONDS - start)) s"
}

run() {
    local seconds=$1; shift
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    local failed=0 total=0
    printf '%-15s %8s %12s %8s %7s %9s %s\n' target seconds executions exec/s cov features findings
    for t in "${targets[@]}"; do
        local bin; bin=$(binary_of "$t")
        local corpus=$OUT/corpus/$t findings=$OUT/findings/$t log=$OUT/logs/$t.log
        mkdir -p "$corpus" "$findings" "$OUT/logs"
        rm -f "$findings"/*
        # The committed seeds are read-only input; what libFuzzer learns goes to .build-fuzz/corpus.
        SWIFT_BACKTRACE=enable=no WPS_FUZZ_TARGET=$t \
        ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
            "$OUT/$bin" "$corpus" "Tests/Fuzz/Corpus/$t" -max_total_time="$seconds" -timeout=10 \
            -rss_limit_mb=3072 -max_len=8192 -print_final_stats=1 -artifact_prefix="$findings/" \
            > "$log" 2>&1 || true
        local execs cov ft rate n
        execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
        rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
        ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}')
        n=$(find "$findings" -type f | wc -l)
        if [ -z "$execs" ] || grep -qE "ERROR: (AddressSanitizer|libFuzzer)|Fatal error|deadly signal" "$log"; then
            [ "$n" -gt 0 ] || n=1
        fi
        printf '%-15s %8s %12s %8s %7s %9s %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$n"
        if [ "$n" -gt 0 ]; then
            failed=$((failed + 1))
            echo "  finding(s) in $findings (log $log):"
            grep -E "Fatal error|ERROR:|SUMMARY" "$log" | head -5 | sed 's/^/    /'
        fi
        total=$((total + ${execs:-0}))
    done
    echo "fuzz: ${#targets[@]} targets, $total executions, $failed with findings"
    [ "$failed" -eq 0 ]
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 build | run SECONDS [TARGET…]" >&2; exit 2 ;;
esac
