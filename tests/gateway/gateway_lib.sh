#!/usr/bin/env bash
# Shared pieces of the gateway tests: everything of tests/e2e/serve_lib.sh (private redis-server,
# CPU replicas of glm4v-serve, cleanup) plus glm4v-gateway instances on free loopback ports and a
# curl helper. Source it, then call gw_setup BIN_DIR TESTDATA.
# shellcheck source=tests/e2e/serve_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/serve_lib.sh"
# shellcheck disable=SC2034 # used by the tests that source this file
GW_NODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/node" && pwd)
GW_PIDS=()

gw_cleanup() {
    local pid
    for pid in "${GW_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    e2e_cleanup
}

gw_setup() { # gw_setup BIN_DIR TESTDATA
    e2e_setup "$1" "$2"
    trap gw_cleanup EXIT
    [ -x "$BIN/glm4v-gateway" ] || { echo "no $BIN/glm4v-gateway" >&2; exit 1; }
}

# gw_start NAME [glm4v-gateway args...]: starts a gateway on a free port (--port 0, the port is
# read back from its log) with --redis and, unless the args name one, --prefix $PREFIX. Sets
# GW_PORT, GW_PID and GW_URL.
gw_start() {
    local name=$1
    shift
    local -a args=(--redis "$REDIS_URL" --port 0)
    [[ " $* " == *" --prefix "* ]] || args+=(--prefix "$PREFIX")
    "$BIN/glm4v-gateway" "${args[@]}" "$@" >"$E2E_DIR/gw-$name.log" 2>&1 </dev/null &
    GW_PID=$!
    GW_PIDS+=("$GW_PID")
    for _ in $(seq 100); do
        GW_PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$E2E_DIR/gw-$name.log" 2>/dev/null |
            sed 's/.*://')
        [ -n "$GW_PORT" ] && break
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$GW_PORT" ]; then
        echo "gateway $name did not start:" >&2
        cat "$E2E_DIR/gw-$name.log" >&2
        return 1
    fi
    # shellcheck disable=SC2034 # used by the tests that source this file
    GW_URL=http://127.0.0.1:$GW_PORT
}

# gw_call PORT METHOD PATH [curl args...]: prints the HTTP status; the body goes to $E2E_DIR/body
# and the headers to $E2E_DIR/headers.
gw_call() {
    local port=$1 method=$2 path=$3
    shift 3
    curl -s -o "$E2E_DIR/body" -D "$E2E_DIR/headers" -w '%{http_code}' --max-time 60 \
        -X "$method" "http://127.0.0.1:$port$path" "$@"
}

# gw_chat PORT JSON [curl args...]: POST /v1/chat/completions; prints the HTTP status.
gw_chat() {
    local port=$1 json=$2
    shift 2
    gw_call "$port" POST /v1/chat/completions -H 'Content-Type: application/json' -d "$json" "$@"
}

# gw_expect WHAT WANT_CODE WANT_ERROR_CODE|- PORT JSON [curl args...]: a chat call must answer
# WANT_CODE with error.code WANT_ERROR_CODE ("-": not checked).
gw_expect() {
    local what=$1 want=$2 want_code=$3 port=$4 json=$5
    shift 5
    local got code=-
    got=$(gw_chat "$port" "$json" "$@")
    [ "$want_code" = - ] || code=$(e2e_json "$E2E_DIR/body" "d['error']['code']" 2>/dev/null)
    if [ "$got" = "$want" ] && [ "$code" = "$want_code" ]; then
        E2E_PASSED=$((E2E_PASSED + 1))
    else
        E2E_FAILED=$((E2E_FAILED + 1))
        echo "FAIL: $what: HTTP $got (want $want), error.code $code (want $want_code): $(head -c 300 "$E2E_DIR/body")" >&2
    fi
}

# A small PNG made with Pillow: gw_png FILE [W H]
gw_png() {
    /usr/bin/python3 - "$1" "${2:-64}" "${3:-48}" <<'PY'
import sys
from PIL import Image, ImageDraw
w, h = int(sys.argv[2]), int(sys.argv[3])
im = Image.new("RGB", (w, h), (200, 40, 40))
ImageDraw.Draw(im).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(250, 220, 60))
im.save(sys.argv[1])
PY
}

# The fingerprint the server recorded for a finished job (<prefix>:done:<id>).
gw_fingerprint() {
    redis-cli -p "$REDIS_PORT" --raw GET "${2:-$PREFIX}:done:$1"
}
