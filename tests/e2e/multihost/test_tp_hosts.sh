#!/usr/bin/env bash
# Tensor parallelism across (fake) hosts: network namespaces from scripts/netns-hosts.sh, Open MPI
# launching through the netns agent, ranks talking over TCP through the veths.
#  - glm4v-run at TP 2 with rank 0 on h1 and rank 1 on h2 gives the golden greedy ids, the same as
#    TP 1 and as TP 2 with both ranks on one host, and its traffic crosses h2's veth;
#  - glm4v-serve at TP 2 over h1 + h2 with Redis on h3 answers text and image jobs with exactly the
#    ids glm4v-run gives at TP 1, its all-reduces cross the veth, and it drains and exits 0.
# usage: test_tp_hosts.sh BIN_DIR TESTDATA
# shellcheck source=tests/e2e/multihost/mh_lib.sh
source "$(dirname "$0")/mh_lib.sh"
mh_setup "$1" "$2" 3

# The golden image case: its prompt ids, pixels and 12 greedy ids from the float64 reference.
read -r ids golden < <(/usr/bin/python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
c = [c for c in d['cases'] if c['name'] == 'image'][0]
print(','.join(map(str, c['input_ids'])), ','.join(map(str, c['greedy_ids'])))" "$MODEL/golden.json")
run_args=(--device cpu --model "$MODEL" --pixels "$MODEL/golden.safetensors:pixel_values"
    --input-ids "$ids" --max-new-tokens 12 --ignore-eos --json)
generated() { e2e_json "$1" "','.join(map(str, d['generated_ids']))" 2>/dev/null; }
mh_run() { # mh_run OUT HOST[:SLOTS]... : glm4v-run at TP = total slots, ranks filled in order
    local out=$1 spec np=0
    shift
    "${MH_KIT[@]}" hostfile "$@" >"$E2E_DIR/hf-run"
    for spec in "$@"; do np=$((np + ${spec#*:})); done
    timeout 120 mpirun --bind-to none -np "$np" --hostfile "$E2E_DIR/hf-run" --mca btl tcp,self,vader \
        -x OMP_NUM_THREADS=1 "$BIN/glm4v-run" --tp "$np" "${run_args[@]}" >"$out" 2>"$out.err"
}

OMP_NUM_THREADS=1 "$BIN/glm4v-run" --tp 1 "${run_args[@]}" >"$E2E_DIR/tp1.json" 2>"$E2E_DIR/tp1.err"
e2e_check "TP 1 gives the golden ids" [ "$(generated "$E2E_DIR/tp1.json")" = "$golden" ]

mh_run "$E2E_DIR/tp2-one.json" h1:2
e2e_check "TP 2 on one host (h1) exits 0" [ $? -eq 0 ]
e2e_check "TP 2 on one host gives the golden ids" [ "$(generated "$E2E_DIR/tp2-one.json")" = "$golden" ]

before=$(mh_veth_bytes h2)
start=$SECONDS
mh_run "$E2E_DIR/tp2-two.json" h1:1 h2:1
rc=$?
crossed=$(($(mh_veth_bytes h2) - before))
mh_log "TP 2 over h1 + h2: exit $rc in $((SECONDS - start)) s, $crossed bytes through h2's veth"
e2e_check "TP 2 over two hosts exits 0 (a hang here is the TCP transport)" [ $rc -eq 0 ]
e2e_check "TP 2 over two hosts gives the golden ids" [ "$(generated "$E2E_DIR/tp2-two.json")" = "$golden" ]
# 12 steps x 3 layers x 2 all-reduces of a 96-float row at least, plus the vision tower's
e2e_check "TP 2 over two hosts: traffic crossed h2's veth ($crossed bytes)" [ "$crossed" -gt 50000 ]

# Serving: Redis on h3, one replica of TP 2 over h1 + h2, clients in the root namespace.
mh_redis_start h3 || exit 1
/usr/bin/python3 "$(dirname "$0")/../random_images.py" "$E2E_DIR" --seed 11 --count 2 --size 30 200
mh_start_replica a "h1 h2" --max-batch 8 || exit 1
prompts=("Describe the picture in detail." "What is in the image?" "Hello" "1 2 3 4 5 6 7 8 9")
job_args() { # job_args I: the arguments of job I, shared by glm4v-submit and glm4v-run
    args=(--prompt "${prompts[$(($1 % 4))]}" --max-new-tokens $((6 + $1)))
    if [ $(($1 % 2)) -eq 1 ]; then args+=(--image "$E2E_DIR/img$(($1 / 2 % 2)).png"); fi
}
# (one command for e2e_check: `e2e_check ... [ a ] && [ b ]` would count only the first test)
same_ids() { [ -n "$1" ] && [ "$1" = "$2" ]; }
before=$(mh_veth_bytes h2)
pids=()
for i in 0 1 2 3 4 5; do
    job_args $i
    mh_submit --id tp-$i "${args[@]}" --temperature 0 --timeout 120 >"$E2E_DIR/tp-$i.json" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
crossed=$(($(mh_veth_bytes h2) - before))
for i in 0 1 2 3 4 5; do
    job_args $i
    OMP_NUM_THREADS=1 "$BIN/glm4v-run" --model "$MODEL" "${args[@]}" --json >"$E2E_DIR/ref-$i.json" 2>/dev/null
    served=$(e2e_json "$E2E_DIR/tp-$i.json" "d['token_ids']" 2>/dev/null)
    alone=$(e2e_json "$E2E_DIR/ref-$i.json" "d['generated_ids']" 2>/dev/null)
    e2e_check "serve job $i over two hosts: $served vs TP 1 $alone" same_ids "$served" "$alone"
    e2e_check "serve job $i: one Result" [ "$(mh_result_count "tp-$i")" = 1 ]
done
mh_log "serving 6 jobs at TP 2 over h1 + h2: $crossed bytes through h2's veth"
e2e_check "serving: traffic crossed h2's veth ($crossed bytes)" [ "$crossed" -gt 50000 ]
e2e_check "rank 1 runs in h2's namespace" [ "$(mh_serve_pids h2 | wc -l)" = 1 ]

start=$SECONDS
bash "$MH_REPO/deploy/common/glm4v-drain.sh" --mpirun-pid "$REPLICA_PID" --timeout 60 >/dev/null
e2e_check "drain over two hosts: exits 0" [ $? -eq 0 ]
mh_log "drain took $((SECONDS - start)) s"
left=$(mh_replica_left "h1 h2" "$REPLICA_PID" | tr '\n' ' ')
e2e_check "drain: nothing of the replica left (ranks, orted, mpirun: ${left:-none})" [ -z "$left" ]

e2e_finish multihost_tp_hosts
