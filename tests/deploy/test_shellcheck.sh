#!/usr/bin/env bash
# Runs shellcheck on every shell script under scripts/, deploy/ and tests/deploy/ (by extension .sh,
# .sbatch or a sh/bash shebang). deploy/ and tests/deploy/ must be clean at every severity;
# scripts/ at warning and above (style notes there are reported but do not fail).
#
# usage: test_shellcheck.sh REPO_ROOT
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
cd "$repo"
command -v shellcheck >/dev/null || { echo "FAIL: shellcheck not installed (scripts/setup.sh)"; exit 1; }

# Prints the shell scripts under the given folders, one per line.
find_scripts() {
    local f
    while IFS= read -r -d '' f; do
        case $f in
        *.sh | *.sbatch) echo "$f" ;;
        *) if head -n 1 "$f" | grep -qE '^#!.*(/|env )(ba)?sh( |$)'; then echo "$f"; fi ;;
        esac
    done < <(find "$@" -type f ! -path '*/node_modules/*' -print0 | sort -z)
}

status=0
mapfile -t strict < <(find_scripts deploy tests/deploy)
mapfile -t lenient < <(find_scripts scripts)
echo "shellcheck: ${#strict[@]} scripts under deploy/ and tests/deploy/, ${#lenient[@]} under scripts/"
[ "${#strict[@]}" -ge 8 ] || { echo "FAIL: expected the deploy scripts, found ${#strict[@]}"; status=1; }

# -x follows `. file` with a `# shellcheck source=` path relative to the repository root.
if ! shellcheck -x "${strict[@]}"; then
    echo "FAIL: shellcheck findings in deploy/ or tests/deploy/"
    status=1
fi
if [ "${#lenient[@]}" -gt 0 ]; then
    if ! shellcheck -x -S warning "${lenient[@]}"; then
        echo "FAIL: shellcheck warnings in scripts/"
        status=1
    fi
    notes=$(shellcheck -x -f gcc "${lenient[@]}" 2>&1 | grep -c ': note: \|: info: ' || true)
    if [ "$notes" -gt 0 ]; then echo "note: $notes style note(s) in scripts/ (shellcheck -x scripts/*.sh)"; fi
fi
[ "$status" = 0 ] && echo "test_shellcheck: passed"
exit "$status"
