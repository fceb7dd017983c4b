#!/usr/bin/env bash
# glm4v-run's error handling: each bad input gets exit code 2 and a message that says what is
# wrong; the good paths print ids.  usage: test_run_cli.sh GLM4V_RUN TINY_A TINY_B MPIEXEC
set -u
run=$1 a=$2 b=$3 mpiexec=$4
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect CODE PATTERN -- command...: the command exits CODE and its stderr matches PATTERN
expect() {
    local code=$1 pattern=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local got=$?
    if [ "$got" -eq "$code" ] && grep -qE -- "$pattern" "$tmp/err"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: '$*' exited $got (want $code), stderr:" >&2
        sed 's/^/    /' "$tmp/err" >&2
    fi
}

text_ids=402,404,407,10,68,262,99,408
expect 2 "outside the vocabulary" -- "$run" --model "$a" --input-ids 1,2,99999
expect 2 "bad id" -- "$run" --model "$a" --input-ids 1,x,3
expect 2 "no pixels" -- "$run" --model "$a" --input-ids 402,404,407,10,410,400,411,408
expect 2 "no <\|begin_of_image\|> marker" -- "$run" --model "$a" --input-ids "$text_ids" \
    --pixels "$a/golden.safetensors"
expect 2 "shape" -- "$run" --model "$a" --input-ids 402,404,407,10,410,400,411,408 \
    --pixels "$b/golden.safetensors"
expect 2 "image marker" -- "$run" --model "$a" --input-ids 402,410,400,408
expect 2 "exceeds seq_length" -- "$run" --model "$a" --input-ids "$text_ids" \
    --max-new-tokens 5000
expect 2 "unknown or incomplete option" -- "$run" --model "$a" --input-ids 1 --frobnicate
expect 2 "--model DIR is required" -- "$run" --input-ids 1
expect 2 "exactly one of" -- "$run" --model "$a"
expect 1 "config.json" -- "$run" --model "$tmp/nowhere" --input-ids 1
expect 2 "does not divide num_attention_heads" -- "$mpiexec" --oversubscribe -np 3 "$run" \
    --model "$a" --tp 3 --input-ids "$text_ids"
expect 2 "--tp 2 but mpirun started 1 rank" -- "$run" --model "$a" --tp 2 --input-ids 1
expect 2 "--dtype must be one of bf16, f16" -- "$run" --model "$a" --dtype f32 --input-ids 1
expect 1 "computes and stores f32" -- "$run" --model "$a" --dtype f16 --input-ids 1

# broken checkpoints: a missing tensor, a shape the config does not imply, a truncated file; each
# is one message naming the file and the tensor, exit 1, nothing loaded
mkdir -p "$tmp/missing" "$tmp/shape" "$tmp/cut"
/usr/bin/python3 - "$a" "$tmp" <<'PY'
import json, shutil, struct, sys
src, tmp = sys.argv[1], sys.argv[2]
data = open(f"{src}/model.safetensors", "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n]); body = data[8 + n:]
def write(path, hdr, drop=None):
    out, blobs, off = {}, [], 0
    for k, v in hdr.items():
        if k == "__metadata__" or k == drop: continue
        b, e = v["data_offsets"]; blob = body[b:e]
        out[k] = dict(v, data_offsets=[off, off + len(blob)]); blobs.append(blob); off += len(blob)
    h = json.dumps(out).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
write(f"{tmp}/missing/model.safetensors", header, drop="transformer.encoder.layers.1.mlp.dense_4h_to_h.weight")
shutil.copy(f"{src}/config.json", f"{tmp}/missing/config.json")
write(f"{tmp}/shape/model.safetensors", header)
cfg = json.load(open(f"{src}/config.json")); cfg["ffn_hidden_size"] = 128
json.dump(cfg, open(f"{tmp}/shape/config.json", "w"))
open(f"{tmp}/cut/model.safetensors", "wb").write(data[:len(data) // 2])
shutil.copy(f"{src}/config.json", f"{tmp}/cut/config.json")
PY
expect 1 "layers.1.mlp.dense_4h_to_h.weight" -- "$run" --model "$tmp/missing" --input-ids 1,2
expect 1 "dense_h_to_4h.weight.*(shape|\\[)" -- "$run" --model "$tmp/shape" --input-ids 1,2
expect 1 "cut/model.safetensors" -- "$run" --model "$tmp/cut" --input-ids 1,2

# text prompts and image files (issue 3): bad images are input errors; a good one is preprocessed
# exactly as the server does and can be dumped
head -c 2000 /dev/urandom >"$tmp/noise.png"
printf '\x89PNG\r\n\x1a\n' >"$tmp/cut.png"
expect 2 "image" -- "$run" --model "$b" --prompt "What is this?" --image "$tmp/noise.png"
expect 2 "image" -- "$run" --model "$b" --prompt "What is this?" --image "$tmp/cut.png"
expect 2 "cannot open" -- "$run" --model "$b" --prompt "What is this?" --image "$tmp/none.jpg"
expect 2 "need --prompt" -- "$run" --model "$b" --input-ids 1,2 --image "$tmp/noise.png"
/usr/bin/python3 -c "
from PIL import Image
Image.new('RGB', (90, 60), (10, 200, 30)).save('$tmp/green.png')"
"$run" --model "$b" --prompt "Describe the picture in detail." --image "$tmp/green.png" \
    --max-new-tokens 0 --dump-pixels "$tmp/px.safetensors" --json >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && /usr/bin/python3 - "$tmp/px.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
h = json.loads(data[8:8 + n])["pixel_values"]
assert h["dtype"] == "F32" and h["shape"] == [1, 3, 84, 84], h
vals = struct.unpack("<%df" % (3 * 84 * 84), data[8 + n:8 + n + 4 * 3 * 84 * 84])
mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
want = [(v / 255.0 - m) / s for v, m, s in zip((10, 200, 30), mean, std)]
for c in range(3):
    got = vals[c * 84 * 84 + 1000]
    assert abs(got - want[c]) < 1e-5, (c, got, want[c])
PY
then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: --dump-pixels" >&2; cat "$tmp/err" >&2; fi
# the prompt through the chat template gives the golden ids (text case of glm4v-tiny-b)
"$run" --model "$b" --prompt "Describe the picture in detail." --max-new-tokens 12 --ignore-eos \
    --json >"$tmp/out" 2>/dev/null
gold=$(/usr/bin/python3 -c "import json; d=json.load(open('$b/golden.json')); c=[c for c in d['cases'] if c['name']=='text'][0]; print(c['input_ids'], c['greedy_ids'])")
got=$(/usr/bin/python3 -c "import json; d=json.load(open('$tmp/out')); print(d['prompt_ids'], d['generated_ids'])")
if [ "$gold" = "$got" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: --prompt ids $got vs $gold" >&2; fi

# and the good path: greedy ids of the golden text case, stopping at nothing
"$run" --model "$a" --input-ids "$text_ids" --max-new-tokens 3 --ignore-eos >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ "$(wc -w <"$tmp/out")" -eq 3 ]; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: good run printed '$(cat "$tmp/out")'" >&2; fi

# --random-weights needs only config.json (the checkpoint is never opened)
mkdir -p "$tmp/random" && cp "$a/config.json" "$tmp/random/"
"$run" --model "$tmp/random" --random-weights 7 --input-ids "$text_ids" --max-new-tokens 2 \
    --ignore-eos >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ "$(wc -w <"$tmp/out")" -eq 2 ]; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: --random-weights: $(cat "$tmp/err")" >&2; fi

echo "run_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
