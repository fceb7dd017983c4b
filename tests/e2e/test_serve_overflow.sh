#!/usr/bin/env bash
# A job whose activations overflow (non-finite logits) ends with an INTERNAL error Result while the
# jobs batched beside it are served and the replica stays up (and glm4v-run exits 1 saying why). The overflow is made real: in a copy
# of the tiny model, the embedding row of the '~' token is +inf, so any prompt holding '~' turns
# into NaN inside the decoder, exactly as an fp16 activation overflow would (the sampler sees a
# row with no finite logit).  usage: test_serve_overflow.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"

tok=$(printf '~' | "$BIN/glm4v-tokenize" --tokenizer "$MODEL/tokenizer.model")
e2e_check "'~' is one token ($tok)" [ -n "$tok" ] --and [ "$tok" -eq "$tok" ] 2>/dev/null
poisoned=$E2E_DIR/poisoned
mkdir -p "$poisoned"
/usr/bin/python3 - "$MODEL" "$poisoned" "$tok" <<'PY'
import json, os, shutil, struct, sys
src, dst, tok = sys.argv[1], sys.argv[2], int(sys.argv[3])
for f in os.listdir(src):
    shutil.copy(os.path.join(src, f), dst)
name = "transformer.embedding.word_embeddings.weight"
index = f"{dst}/model.safetensors.index.json"
path = f"{dst}/{json.load(open(index))['weight_map'][name]}" if os.path.exists(index) \
    else f"{dst}/model.safetensors"
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
meta = json.loads(data[8:8 + n])[name]
cols = meta["shape"][1]
inf = {"F32": struct.pack("<f", float("inf")), "BF16": b"\x80\x7f", "F16": b"\x00\x7c"}[meta["dtype"]]
start = 8 + n + meta["data_offsets"][0] + tok * cols * len(inf)
data[start:start + cols * len(inf)] = inf * cols
open(path, "wb").write(data)
PY
MODEL=$poisoned
# glm4v-run says the same and exits 1 instead of printing the argmax of NaNs
"$BIN/glm4v-run" --model "$MODEL" --prompt "What is ~ this?" --max-new-tokens 4 \
    >"$E2E_DIR/run.out" 2>"$E2E_DIR/run.err"
rc=$?
e2e_check "glm4v-run on the overflowing prompt: exit 1 ($rc), 'not finite'" [ $rc -eq 1 ] --and \
    grep -q "not finite" "$E2E_DIR/run.err"
e2e_start_replica r 2 || exit 1

# the poisoned prompt and a clean one, submitted together so that they share steps
e2e_submit --id bad --prompt "What is ~ this?" --max-new-tokens 6 --temperature 0 --timeout 60 \
    >"$E2E_DIR/bad.json" 2>"$E2E_DIR/bad.err" &
bad_pid=$!
e2e_submit --id clean --prompt "Hi" --max-new-tokens 6 --temperature 0 --ignore-eos --timeout 60 \
    >"$E2E_DIR/clean.json" 2>"$E2E_DIR/clean.err" &
clean_pid=$!
wait $bad_pid
bad_rc=$?
wait $clean_pid
clean_rc=$?
code=$(e2e_json "$E2E_DIR/bad.json" "(d['error'] or {}).get('code')" 2>/dev/null)
msg=$(e2e_json "$E2E_DIR/bad.json" "(d['error'] or {}).get('message')" 2>/dev/null)
e2e_check "overflowing job: exit 1, INTERNAL (rc $bad_rc, $code)" [ $bad_rc -eq 1 ] --and [ "$code" = INTERNAL ]
e2e_check "overflowing job: the message says why ($msg)" grep -q "not finite" <<<"$msg"
e2e_check "the job beside it: served, 6 tokens (rc $clean_rc)" [ $clean_rc -eq 0 ] --and \
    [ "$(e2e_json "$E2E_DIR/clean.json" "len(d['token_ids'])")" = 6 ]
e2e_check "one Result each" [ "$(e2e_result_count bad)" = 1 ] --and [ "$(e2e_result_count clean)" = 1 ]
e2e_check "the replica is still alive" kill -0 "$REPLICA_PID"
e2e_submit --id after --prompt "Hi" --max-new-tokens 3 --timeout 60 >"$E2E_DIR/after.json"
e2e_check "a job after it is served" [ "$(e2e_json "$E2E_DIR/after.json" "len(d['token_ids'])")" = 3 ]
e2e_finish serve_overflow
