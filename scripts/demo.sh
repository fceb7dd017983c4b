#!/usr/bin/env bash
# The main job, end to end on one machine: build, start a private redis-server on 127.0.0.1,
# start one replica of the cluster (`mpirun -np TP glm4v-serve`), send an image + text job with
# glm4v-submit, print the answer as it streams, ask the same through glm4v-gateway's
# OpenAI-compatible HTTP API with curl (streaming), and stop everything cleanly.
#
#   scripts/demo.sh                                   # tiny test model, CPU backend, 2 ranks
#   scripts/demo.sh --device cuda --model DIR --tp N  # a real GLM-4V-9B folder on N GPUs
set -euo pipefail
cd "$(dirname "$0")/.."
model=../shared/testdata/glm4v-tiny-b
device=cpu
tp=2
image=
prompt="Describe the picture in detail."
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --tp) tp=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    *) echo "demo.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1 NCCL_NVLS_ENABLE=0
[ "$device" = cpu ] && export OMP_NUM_THREADS=1

bash scripts/build.sh

run=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
serve_pid=
gateway_pid=
cleanup() {
    if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; fi
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        bash deploy/common/glm4v-drain.sh --mpirun-pid "$serve_pid" --timeout 60 >/dev/null 2>&1 ||
            kill -9 "$serve_pid" 2>/dev/null || true
    fi
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$run"
}
trap cleanup EXIT

redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$run" --daemonize yes \
    --logfile "$run/redis.log" >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
echo "demo: redis-server on 127.0.0.1:$port"

mpirun --bind-to none -np "$tp" build/bin/glm4v-serve --device "$device" --tp "$tp" \
    --model "$model" --redis "redis://127.0.0.1:$port" --prefix demo >"$run/serve.log" 2>&1 &
serve_pid=$!
until grep -q ready "$run/serve.log" 2>/dev/null; do
    kill -0 "$serve_pid" 2>/dev/null || { cat "$run/serve.log" >&2; exit 1; }
    sleep 0.2
done
echo "demo: $(grep ready "$run/serve.log" | sed 's/^glm4v-serve: //')"
build/bin/glm4v-gateway --redis "redis://127.0.0.1:$port" --prefix demo --port 0 \
    >"$run/gateway.log" 2>&1 &
gateway_pid=$!
until grep -q listening "$run/gateway.log" 2>/dev/null; do
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$run/gateway.log" >&2; exit 1; }
    sleep 0.1
done
api=$(grep -o 'http://127.0.0.1:[0-9]*' "$run/gateway.log")
echo "demo: glm4v-gateway (OpenAI-compatible API) on $api/v1"

if [ -z "$image" ]; then
    image=$run/demo.png
    /usr/bin/python3 -c "
from PIL import Image, ImageDraw
im = Image.new('RGB', (640, 480), (200, 40, 40))
d = ImageDraw.Draw(im)
d.ellipse((220, 140, 420, 340), fill=(250, 220, 60))
d.rectangle((0, 400, 640, 480), fill=(40, 120, 40))
im.save('$image')"
fi
echo "demo: job: image $(basename "$image") + \"$prompt\""
case $model in
*glm4v-tiny-*) echo "demo: (the built-in test model has random weights: its words are noise; the path is real)" ;;
esac
echo "demo: streamed answer:"
build/bin/glm4v-submit --redis "redis://127.0.0.1:$port" --prefix demo --image "$image" \
    --prompt "$prompt" --max-new-tokens 32 --temperature 0
echo
echo "demo: the same question through the OpenAI API (curl $api/v1/chat/completions, streaming):"
/usr/bin/python3 - "$image" "$prompt" >"$run/request.json" <<'PY'
import base64, json, sys
image = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
print(json.dumps({"model": "glm-4v-9b", "stream": True, "max_tokens": 32, "temperature": 0,
                  "messages": [{"role": "user", "content": [
                      {"type": "text", "text": sys.argv[2]},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}]}]}))
PY
curl -sN "$api/v1/chat/completions" -H 'Content-Type: application/json' -d @"$run/request.json" |
    /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data: {"):
        event = json.loads(line[6:])
        for choice in event.get("choices", []):
            print(choice["delta"].get("content") or "", end="", flush=True)'
echo
echo "demo: stopping the gateway, the replica (drain) and redis-server"
