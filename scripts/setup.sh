#!/usr/bin/env bash
# Installs every Debian package glm4v-cluster needs to build, test and run, and the npm packages
# the tokenizer test compares against and the gateway test drives it with. Idempotent and quiet;
# apt-get update runs once.
# Run as root on Debian 12. Nothing is fetched from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    build-essential cmake pkg-config git
    openmpi-bin libopenmpi-dev                      # launcher, control plane, CPU communicator
    libhiredis-dev redis-server redis-tools         # job queue (tests start a real server)
    libprotobuf-c-dev protobuf-c-compiler           # job / result wire format
    libcjson-dev libpcre2-dev libxxhash-dev         # config + JSONL, tokenizer regex, image hash
    libjpeg62-turbo-dev libpng-dev libwebp-dev      # image decoding
    libmicrohttpd-dev                               # Prometheus metrics endpoint, HTTP gateway
    libcurl4-openssl-dev                            # gateway: fetch allow-listed image URLs
    python3 python3-pil python3-numpy python3-yaml  # Pillow reference, manifest checks
    clang libclang-rt-14-dev                        # libFuzzer + sanitizers
    shellcheck valgrind                             # script lint, memory tests
    iproute2 slurm-wlm munge                        # fake hosts (netns), one-node Slurm test
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node + npm for the tiktoken reference: any working install will do
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/install-tiktoken.sh
# the official openai client (pinned in its package-lock.json) that drives the gateway tests
npm ci --prefix tests/gateway/node --no-audit --no-fund --loglevel=error >/dev/null
echo "setup: all packages present"
