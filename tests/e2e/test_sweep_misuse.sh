#!/usr/bin/env bash
# glm4v-sweep under misuse, end to end (docs/SWEEP.md "Job ids and Results kept in Redis"):
#  - two sweeps whose rows reuse the same ids ("1", "2", "3") with other prompts, both without
#    --job-prefix: each gets its own answers (the derived prefixes differ), none "found in Redis";
#    running the first again finds all of its answers in Redis (a resume keeps its prefix);
#  - the same two inputs forced onto one --job-prefix: the second sweep's rows are ID_CONFLICT
#    lines, never the first sweep's text;
#  - rows whose image lies outside --image-root (../, an absolute path, a symlink out of the root)
#    are INVALID_REQUEST lines and nothing of those files reaches Redis; an image inside is answered.
# usage: test_sweep_misuse.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
D=$E2E_DIR/sw
mkdir -p "$D/root/img" "$D/outside"
e2e_start_replica r0 1 || exit 1
SWEEP=("$BIN/glm4v-sweep" --redis "$REDIS_URL" --prefix "$PREFIX" --max-new-tokens 6)
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
field() { /usr/bin/python3 -c "import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d['id'] == sys.argv[2]: print($3)" "$1" "$2"; }

for i in 1 2 3; do echo "{\"id\": \"$i\", \"prompt\": \"first sweep, question $i\"}"; done >"$D/first.jsonl"
for i in 1 2 3; do echo "{\"id\": \"$i\", \"prompt\": \"second sweep asks something else $i\"}"; done \
    >"$D/second.jsonl"

# two sweeps, colliding row ids, default prefixes
"${SWEEP[@]}" --in "$D/first.jsonl" --out "$D/first.out" 2>"$D/first.err"
e2e_check "collide: first sweep exit 0" [ $? -eq 0 ]
"${SWEEP[@]}" --in "$D/second.jsonl" --out "$D/second.out" 2>"$D/second.err"
e2e_check "collide: second sweep exit 0" [ $? -eq 0 ]
e2e_check "collide: nothing of the first found in Redis" grep -q "(0 found in Redis)" "$D/second.err"
e2e_check "collide: errors none" grep -q "errors: none" "$D/second.err"
for i in 1 2 3; do
    e2e_submit --id "direct-$i" --prompt "second sweep asks something else $i" --max-new-tokens 6 \
        --temperature 0 >"$D/direct-$i.json" 2>/dev/null
    e2e_check "collide: row $i of the second sweep is its own answer" \
        [ "$(field "$D/second.out" "$i" "d['token_ids']")" = "$(e2e_json "$D/direct-$i.json" "d['token_ids']")" ]
done
"${SWEEP[@]}" --in "$D/first.jsonl" --out "$D/first-again.out" 2>"$D/first-again.err"
e2e_check "collide: the first sweep again finds its 3 answers in Redis" \
    grep -q "(3 found in Redis)" "$D/first-again.err"
e2e_check "collide: and they are its own" [ "$(field "$D/first-again.out" 2 "d['token_ids']")" = \
    "$(field "$D/first.out" 2 "d['token_ids']")" ]

# one forced prefix: the second sweep's rows conflict
"${SWEEP[@]}" --in "$D/first.jsonl" --out "$D/f1.out" --job-prefix shared- 2>/dev/null
"${SWEEP[@]}" --in "$D/second.jsonl" --out "$D/f2.out" --job-prefix shared- 2>"$D/f2.err"
e2e_check "forced prefix: exit 1 (row errors)" [ $? -eq 1 ]
e2e_check "forced prefix: 3 ID_CONFLICT lines" grep -q "errors: ID_CONFLICT=3" "$D/f2.err"
e2e_check "forced prefix: never the first sweep's text" \
    [ "$(field "$D/f2.out" 1 "d['text'] + d['error']['code']")" = ID_CONFLICT ]
e2e_check "forced prefix: the first sweep's Results are untouched" \
    [ "$(e2e_result_count shared-1)" = 1 ]

# images outside the root
/usr/bin/python3 "$(dirname "$0")/sweep/make_data.py" "$D/root" 1 1 >/dev/null
cp "$D/root/img/0000.jpg" "$D/outside/secret.jpg"
ln -s ../../outside/secret.jpg "$D/root/img/link.jpg"
{
    echo '{"id": "inside", "image": "img/0000.jpg", "prompt": "What is in the image?"}'
    echo '{"id": "dotdot", "image": "../outside/secret.jpg", "prompt": "What is in the image?"}'
    echo "{\"id\": \"absolute\", \"image\": \"$D/outside/secret.jpg\", \"prompt\": \"What is in the image?\"}"
    echo '{"id": "symlink", "image": "img/link.jpg", "prompt": "What is in the image?"}'
    echo '{"id": "passwd", "image": "../../../../../../../../etc/passwd", "prompt": "What is in the image?"}'
} >"$D/root/images.jsonl"
"${SWEEP[@]}" --in "$D/root/images.jsonl" --out "$D/images.out" --job-prefix img- 2>"$D/images.err"
e2e_check "image root: exit 1 (row errors)" [ $? -eq 1 ]
e2e_check "image root: the image inside is answered" [ "$(field "$D/images.out" inside "d['error']")" = None ]
for id in dotdot absolute symlink passwd; do
    e2e_check "image root: $id refused" [ "$(field "$D/images.out" "$id" "d['error']['code']")" = INVALID_REQUEST ]
    e2e_check "image root: $id never sent" [ "$(rcli EXISTS "$PREFIX:out:img-$id")" = 0 ]
done
e2e_check "image root: the message says why" grep -q "outside --image-root" "$D/images.err"

e2e_finish sweep_misuse
