#!/usr/bin/env bash
# scripts/netns-hosts.sh and scripts/netns-agent.sh themselves (own prefix glm4vk, 198.18.78.0/24):
#  - bad input (N < 1, not a number, a namespace of that name made by someone else, not root, a
#    failure half way through `up`) is refused with a clear message and leaves nothing behind;
#  - up is idempotent and grows; hosts reach each other and have no route off their subnet;
#  - the agent runs an ssh-style command string in the host, under the host's name, and refuses
#    names that are not the kit's; the hostfile writer; down removes everything, processes too.
# usage: test_netns_kit.sh
# shellcheck source=tests/e2e/multihost/mh_lib.sh
source "$(dirname "$0")/mh_lib.sh"
mh_require_netns
kit=(bash "$MH_REPO/scripts/netns-hosts.sh" --prefix glm4vk --net 78)
agent=$MH_REPO/scripts/netns-agent.sh
E2E_DIR=$(mktemp -d)
cleanup() {
    "${kit[@]}" down >/dev/null 2>&1
    ip netns del glm4vk-h2 2>/dev/null
    rm -rf "$E2E_DIR"
}
trap cleanup EXIT

# Nothing of the kit's prefix anywhere: namespaces, links, state, hosts files.
nothing_left() {
    local what
    what=$(
        ip netns list | awk '{print $1}' | grep '^glm4vk-' | grep -vx "${1:-none}"
        ip -o link show | grep -o 'glm4vk-[a-z0-9]*'
        ls -d /run/glm4v-netns/glm4vk /etc/netns/glm4vk-* 2>/dev/null
    )
    [ -z "$what" ] || { echo "left behind: $what" >&2; return 1; }
}
not_alive() { ! kill -0 "$1" 2>/dev/null; }
fails_with() { # fails_with MESSAGE command...: exits non-zero and says MESSAGE on stderr
    local msg=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "succeeded: $*" >&2
        return 1
    fi
    grep -q -- "$msg" <<<"$out" || { echo "no '$msg' in: $out" >&2; return 1; }
}

e2e_check "up 0 refused" fails_with "N must be from 1" "${kit[@]}" up 0
e2e_check "up abc refused" fails_with "N must be a number" "${kit[@]}" up abc
e2e_check "bad --net refused" fails_with "a number from 0 to 255" bash "$MH_REPO/scripts/netns-hosts.sh" --net 300 up 1
e2e_check "nothing left after bad N" nothing_left

ip netns add glm4vk-h2
e2e_check "someone else's namespace refused" fails_with "glm4vk-h2 exists and was not made by this kit" "${kit[@]}" up 3
e2e_check "nothing made, theirs kept" nothing_left glm4vk-h2
e2e_check "their namespace still there" ip netns pids glm4vk-h2
ip netns del glm4vk-h2

if command -v setpriv >/dev/null; then
    e2e_check "not root refused" fails_with "needs root" \
        setpriv --reuid=65534 --regid=65534 --clear-groups "${kit[@]}" up 2
    e2e_check "nothing left after not root" nothing_left
fi

# A failure half way: an `ip` that breaks when the third host is made. up must undo h1, h2 and the
# bridge it made, and say so.
mkdir -p "$E2E_DIR/fakebin"
cat >"$E2E_DIR/fakebin/ip" <<'EOF'
#!/bin/sh
case "$*" in *"netns add glm4vk-h3"*) echo "ip: injected failure" >&2; exit 1 ;; esac
exec /usr/sbin/ip "$@"
EOF
chmod +x "$E2E_DIR/fakebin/ip"
e2e_check "a failure half way through up is reported" fails_with "up failed; removing what it made" \
    env PATH="$E2E_DIR/fakebin:$PATH" "${kit[@]}" up 3
e2e_check "nothing left after a failed up" nothing_left

# up, again (idempotent), then more hosts
e2e_check "up 2" "${kit[@]}" up 2
e2e_check "up 2 again" "${kit[@]}" up 2
e2e_check "up 3 adds h3" "${kit[@]}" up 3
e2e_check "3 hosts, one veth each" [ "$(ip -o link show | grep -c 'glm4vk-v[0-9]')" = 3 ]
e2e_check "h3 has its address" ip -n glm4vk-h3 -4 addr show dev eth0 | grep -q "198.18.78.3/24"
routes=$(ip -n glm4vk-h1 -4 route show | sed 's/ *$//')
e2e_check "h1 routes only its subnet (no default route): $routes" \
    [ "$routes" = "198.18.78.0/24 dev eth0 proto kernel scope link src 198.18.78.1" ]
ip netns exec glm4vk-h2 /usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("198.18.78.2", 7700)); s.listen(1)
c, _ = s.accept(); c.sendall(c.recv(16).upper())' &
server=$!
sleep 0.5
reply=$(ip netns exec glm4vk-h1 /usr/bin/python3 -c '
import socket
s = socket.create_connection(("glm4vk-h2", 7700), timeout=5); s.sendall(b"ping"); print(s.recv(16).decode())')
wait $server
e2e_check "h1 reaches h2 by name over the bridge ($reply)" [ "$reply" = PING ]

# the agent: ssh-style command string, the host's name, refusals
# shellcheck disable=SC2016 # expanded by the shell inside h1, as ssh would
out=$("$agent" glm4vk-h1 'echo "$(hostname)" on' '$(ip -4 -o addr show dev eth0 | awk "{print \$4}")')
e2e_check "agent runs the command string in h1 ($out)" [ "$out" = "glm4vk-h1 on 198.18.78.1/24" ]
e2e_check "agent refuses a name that is not the kit's" fails_with "is not a host" "$agent" localhost true
e2e_check "agent refuses a host that is not up" fails_with "no namespace glm4vk-h9" "$agent" glm4vk-h9 true
e2e_check "hostfile" [ "$("${kit[@]}" hostfile h1:2 glm4vk-h3)" = "$(printf 'glm4vk-h1 slots=2\nglm4vk-h3 slots=1')" ]
e2e_check "hostfile refuses a bad host" fails_with "not a host of this kit" "${kit[@]}" hostfile h0
env_ok() { "${kit[@]}" env | grep -q "OMPI_MCA_btl_tcp_if_include=198.18.78.0/24"; }
e2e_check "env names the agent and the subnet" env_ok
keepalive_ok() { "${kit[@]}" env | grep -q "OMPI_MCA_oob_tcp_keepalive_time=3$"; }
e2e_check "env sets the OOB keepalive of a 30 s step deadline" keepalive_ok

# down: removes everything, including what still runs inside
"${kit[@]}" exec h1 sleep 300 &
sleeper=$!
sleep 0.3
e2e_check "a process runs in h1" [ -n "$(ip netns pids glm4vk-h1)" ]
e2e_check "down" "${kit[@]}" down
wait $sleeper 2>/dev/null
e2e_check "down ended the process in h1" not_alive $sleeper
e2e_check "nothing left after down" nothing_left
e2e_check "down again is harmless" "${kit[@]}" down
e2e_finish multihost_netns_kit
