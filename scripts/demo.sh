#!/usr/bin/env bash
# The main job: builds, then answers an image + text prompt on the built-in tiny checkpoint with
# the CPU backend.  With a GPU and a real model folder:  scripts/demo.sh --device cuda --model DIR
set -euo pipefail
cd "$(dirname "$0")/.."
model=../shared/testdata/glm4v-tiny-b
device=cpu
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
bash scripts/build.sh
ids=$(/usr/bin/python3 -c "import json,sys; d=json.load(open('$model/golden.json')); \
print(','.join(str(i) for i in [c for c in d['cases'] if c['name']=='image'][0]['input_ids']))")
echo "glm4v-run on $model, image case, $device backend:"
build/bin/glm4v-run --model "$model" --device "$device" --input-ids "$ids" \
    --pixels "$model/golden.safetensors" --max-new-tokens 12 --ignore-eos --json
