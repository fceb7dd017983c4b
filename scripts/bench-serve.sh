#!/usr/bin/env bash
# End-to-end serving benchmark on the GPU machine: full-size GLM-4V-9B with random weights, one
# replica `glm4v-serve --device cuda`, a private redis-server, and a stream of image + question
# jobs (64 generated tokens each) at increasing arrival rates, then at saturation. Prints images/s,
# generated tokens/s and time-to-first-token p50/p99 per rate, and the queue path's overhead: a
# lone job's total time through Redis against glm4v-run's vision + prefill + decode time for the
# same job.
#   source .devdeps/env.sh && scripts/bench-serve.sh [--tp N] [--rates "0.5 1 2 4"] [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 rates="0.5 1 2 4" jobs=64 max_new=64
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    *) echo "bench-serve.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=${BUILD_DIR:-build-gpu}
if ! pkg-config --exists gnutls 2>/dev/null; then
    mkdir -p "$B/pkgconfig-stubs"
    printf 'Name: gnutls\nDescription: stub\nVersion: 3.8.0\n' >"$B/pkgconfig-stubs/gnutls.pc"
    export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}:$PWD/$B/pkgconfig-stubs"
fi
cmake -B "$B" -S . -DGLM4V_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" >/dev/null
cmake --build "$B" -j"$(nproc)" --target glm4v-serve glm4v-submit glm4v-run >/dev/null

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
serve_pid=
cleanup() {
    [ -n "$serve_pid" ] && { pkill -TERM -f -- "--prefix bench --server-id bench" || true; sleep 2; kill -9 "$serve_pid" 2>/dev/null || true; pkill -9 -f -- "--prefix bench" || true; }
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/model" "$work/images"
cp configs/glm-4v-9b/config.json "$work/model/"
python3 scripts/make_synthetic_tokenizer.py "$work/model/tokenizer.model" >/dev/null
python3 - "$work/images" <<'PY'
import sys, random
from PIL import Image
rnd = random.Random(3)
for i in range(16):
    im = Image.effect_noise((800, 600), 60).convert("RGB")
    im.save(f"{sys.argv[1]}/img{i:02d}.jpg", quality=90)
PY
redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$work" --daemonize yes \
    --logfile "$work/redis.log" >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
url=redis://127.0.0.1:$port
mpirun --bind-to none -np "$tp" "$B/bin/glm4v-serve" --device cuda --tp "$tp" --model "$work/model" \
    --random-weights 1 --redis "$url" --prefix bench --server-id bench --max-batch 64 \
    --vision-cache 4 >"$work/serve.log" 2>&1 &
serve_pid=$!
until grep -q ready "$work/serve.log" 2>/dev/null; do
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 1
done
grep ready "$work/serve.log"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1

# the queue path's overhead on a lone job, against glm4v-run on the same job
img=$work/images/img00.jpg q="Describe the picture in detail."
"$B/bin/glm4v-submit" --redis "$url" --prefix bench --json --ignore-eos --temperature 0 \
    --max-new-tokens $max_new --image "$img" --prompt "$q" >/dev/null # warm-up
for k in 1 2 3; do
    "$B/bin/glm4v-submit" --redis "$url" --prefix bench --json --ignore-eos --temperature 0 \
        --max-new-tokens $max_new --image "$img" --prompt "$q x$k" >"$work/lone$k.json"
done
run_json=$("$B/bin/glm4v-run" --device cuda --model "$work/model" --random-weights 1 --image "$img" \
    --prompt "$q" --max-new-tokens $max_new --ignore-eos --json 2>/dev/null)
python3 - "$work" "$run_json" <<'PY'
import json, sys, statistics
served = [json.load(open(f"{sys.argv[1]}/lone{k}.json"))["timings"]["total_ms"] for k in (1, 2, 3)]
r = json.loads(sys.argv[2])["timings_ms"]
engine = r["vision"] + r["prefill"] + r["decode"]
s = statistics.median(served)
print(f"serve lone_job_total_ms={s:.1f} glm4v_run_engine_ms={engine:.1f} overhead_pct={100 * (s - engine) / engine:.1f}")
PY
# note: glm4v-run runs the image through its own step; the server the same. Both use random
# weights of the same seed.

for r in $rates 0; do
    python3 scripts/bench_serve_load.py "$B/bin/glm4v-submit" "$url" bench "$r" "$jobs" \
        "$work/images" $max_new
done
