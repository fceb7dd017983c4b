#!/bin/bash
# Installs the npm tiktoken package pinned in tests/coordinator/tiktoken/package-lock.json; the
# tokenizer's reference test and scripts/bench-tokenizer.sh need it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npm ci --prefix "$root/tests/coordinator/tiktoken" --no-audit --no-fund --loglevel=error >/dev/null
