#!/usr/bin/env bash
# Checks the systemd files in deploy/systemd/. With systemd-analyze: `systemd-analyze verify` of
# glm4v-serve@.service (as instance @0; the /opt/glm4v paths point at stub executables in a temp
# dir, since verify insists every Exec* command exists) and of Debian's redis-server.service with
# the glm4v drop-in. Always: a key=value parse that catches unknown sections, lines without '=',
# a password in an Exec line, and the drain settings (ExecStop drain, TimeoutStopSec above the
# drain timeout, Restart=on-failure, LoadCredential).
#
# usage: test_systemd_units.sh REPO_ROOT
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
dir=$repo/deploy/systemd
unit=$dir/glm4v-serve@.service
dropin=$dir/redis-server.service.d/glm4v.conf
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

/usr/bin/python3 - "$unit" "$dropin" "$dir/glm4v-serve.env.example" <<'PY' || fail "key=value checks"
import re, sys
SECTIONS = {"Unit", "Service", "Install"}
bad = 0
def parse(path):
    global bad
    section, keys, cont = None, {}, False
    for n, line in enumerate(open(path), 1):
        text = line.rstrip("\n")
        if cont:
            cont = text.endswith("\\")
            keys[last] += " " + text.rstrip("\\").strip()
            continue
        if not text.strip() or text.lstrip()[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", text.strip())
        if m:
            section = m.group(1)
            if section not in SECTIONS:
                print(f"FAIL: {path}:{n}: unknown section [{section}]"); bad += 1
            continue
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", text)
        if not m or section is None:
            print(f"FAIL: {path}:{n}: not a Key=value line in a section: {text!r}"); bad += 1
            continue
        last = f"{section}.{m.group(1)}"
        keys[last] = (keys.get(last, "") + " " + m.group(2).rstrip("\\")).strip()
        cont = text.endswith("\\")
    return keys

unit = parse(sys.argv[1])
need = {"Service.ExecStart": None, "Service.ExecStop": "glm4v-drain.sh",
        "Service.Restart": "on-failure", "Service.KillSignal": "SIGTERM",
        "Service.LoadCredential": "redis-password", "Service.EnvironmentFile": "%i",
        "Install.WantedBy": None}
for key, want in need.items():
    if key not in unit:
        print(f"FAIL: {sys.argv[1]}: no {key}"); bad += 1
    elif want and want not in unit[key]:
        print(f"FAIL: {sys.argv[1]}: {key} should mention {want}: {unit[key]}"); bad += 1
for key in ("Service.ExecStart", "Service.ExecStop"):
    if re.search(r"--(redis-)?password(?!-file)|GLM4V_REDIS_PASSWORD=", unit.get(key, "")):
        print(f"FAIL: {key} carries a password"); bad += 1
stop = int(re.sub(r"\D", "", unit.get("Service.TimeoutStopSec", "0")) or 0)
drain = 300
env = {}
for line in open(sys.argv[3]):
    if "=" in line and not line.startswith("#"):
        k, v = line.strip().split("=", 1)
        env[k] = v
    if line.startswith("GLM4V_DRAIN_TIMEOUT="):
        drain = int(line.split("=", 1)[1])
if stop <= drain:
    print(f"FAIL: TimeoutStopSec={stop} must exceed the drain timeout {drain}"); bad += 1
for k in ("GLM4V_TP", "GLM4V_MODEL", "GLM4V_REDIS", "CUDA_VISIBLE_DEVICES"):
    if k not in env:
        print(f"FAIL: the env example lacks {k}"); bad += 1
    if "${" + k + "}" not in unit["Service.ExecStart"] and k not in ("CUDA_VISIBLE_DEVICES",):
        print(f"FAIL: ExecStart does not use ${{{k}}}"); bad += 1
if any("PASSWORD" in k for k in env):
    print("FAIL: a password in the env example"); bad += 1
dropin = parse(sys.argv[2])
if "redis-server" not in dropin.get("Service.ExecStart", ""):
    print("FAIL: the redis drop-in does not set ExecStart"); bad += 1
print(f"key=value: {len(unit)} keys in glm4v-serve@.service, {len(dropin)} in the redis drop-in")
sys.exit(1 if bad else 0)
PY

if command -v systemd-analyze >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/opt/glm4v/bin" "$tmp/opt/glm4v/deploy/common"
    for f in bin/glm4v-serve deploy/common/glm4v-drain.sh; do
        printf '#!/bin/sh\n' >"$tmp/opt/glm4v/$f"
        chmod +x "$tmp/opt/glm4v/$f"
    done
    sed "s#/opt/glm4v#$tmp/opt/glm4v#g" "$unit" >"$tmp/glm4v-serve@.service"
    # verify checks that ExecStart's mpirun exists; a machine without Open MPI gets a stub.
    if [ ! -x /usr/bin/mpirun ]; then
        mkdir -p "$tmp/usr/bin" && printf '#!/bin/sh\n' >"$tmp/usr/bin/mpirun" && chmod +x "$tmp/usr/bin/mpirun"
        sed -i "s#/usr/bin/mpirun#$tmp/usr/bin/mpirun#" "$tmp/glm4v-serve@.service"
    fi
    if out=$(systemd-analyze verify "$tmp/glm4v-serve@0.service" 2>&1) && [ -z "$out" ]; then
        echo "systemd-analyze verify glm4v-serve@0.service: ok"
    else
        fail "systemd-analyze verify glm4v-serve@0.service: $out"
    fi
    if [ -r /lib/systemd/system/redis-server.service ]; then
        mkdir -p "$tmp/redis/redis-server.service.d"
        cp /lib/systemd/system/redis-server.service "$tmp/redis/"
        cp "$dropin" "$tmp/redis/redis-server.service.d/"
        if out=$(cd "$tmp/redis" && systemd-analyze verify ./redis-server.service 2>&1) && [ -z "$out" ]; then
            echo "systemd-analyze verify redis-server.service + glm4v drop-in: ok"
        else
            fail "systemd-analyze verify redis-server.service with the drop-in: $out"
        fi
    else
        echo "note: Debian's redis-server.service is not installed; drop-in checked by the parser only"
    fi
else
    echo "note: systemd-analyze not available; the key=value checks above stand in for it"
fi

if [ "$failures" -gt 0 ]; then
    echo "test_systemd_units: $failures failure(s)"
    exit 1
fi
echo "test_systemd_units: passed"
