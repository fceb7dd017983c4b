# shellcheck shell=bash
# Shared set-up of the end-to-end GPU benchmarks (bench-serve.sh, bench-sweep.sh); sourced, not run.
# Gives: bench_build TARGETS..., bench_model_dir DIR, bench_images DIR N, bench_redis_start,
# bench_serve_start PREFIX ARGS..., bench_serve_stop, and cleanup of everything on exit.
# Needs: $work (a private temporary folder) and $tp set by the caller.
# For a smoke test of the scripts without a GPU: BENCH_DEVICE=cpu BENCH_MODEL=<small checkpoint>
# BUILD_DIR=<a CPU build> (the model then comes from the checkpoint, not random weights).
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=${BUILD_DIR:-build-gpu}
device=${BENCH_DEVICE:-cuda}
port='' serve_pid='' serve_prefix='' url=''
: "${work:?}" "${tp:?}"

bench_build() {
    if [ "$device" = cpu ]; then cmake --build "$B" -j"$(nproc)" >/dev/null; return; fi
    # packed Debian headers (.devdeps): jpeglib.h includes jconfig.h from the multiarch folder,
    # which env.sh leaves off CPATH; without it the machine's own jconfig.h (libjpeg 8) is
    # picked up against the packed libjpeg 62 and every JPEG fails its version check
    if [ -d .devdeps/root/usr/include/x86_64-linux-gnu ]; then
        export CPATH="$PWD/.devdeps/root/usr/include/x86_64-linux-gnu:${CPATH:-}"
    fi
    # the device machine has no gnutls.pc, which libmicrohttpd's .pc names; the metrics server
    # does not use TLS, so an empty stub satisfies pkg-config
    if ! pkg-config --exists gnutls 2>/dev/null; then
        mkdir -p "$B/pkgconfig-stubs"
        printf 'Name: gnutls\nDescription: stub\nVersion: 3.8.0\n' >"$B/pkgconfig-stubs/gnutls.pc"
        export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}:$PWD/$B/pkgconfig-stubs"
    fi
    # the same C flags as bench-gpu.sh (gcc 13 at -O3 flags a false positive in comm_nccl.c)
    cmake -B "$B" -S . -DGLM4V_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
        -DCMAKE_C_FLAGS="${BENCH_CFLAGS--Wno-error=maybe-uninitialized}" >"$work/configure.log" 2>&1 ||
        { tail -30 "$work/configure.log"; exit 1; }
    local t
    for t in "$@"; do
        cmake --build "$B" -j"$(nproc)" --target "$t" >"$work/build.log" 2>&1 ||
            { grep -E -A3 "error|Error" "$work/build.log" | head -40; exit 1; }
    done
}

# Full-size GLM-4V-9B config with a synthetic tokenizer; the weights come from --random-weights.
bench_model_dir() {
    if [ -n "${BENCH_MODEL:-}" ]; then ln -s "$(realpath "$BENCH_MODEL")" "$1"; return; fi
    mkdir -p "$1"
    cp configs/glm-4v-9b/config.json "$1/"
    python3 scripts/make_synthetic_tokenizer.py "$1/tokenizer.model" >/dev/null
}

# N distinct noise JPEGs (800 x 600) named img0000.jpg ...
bench_images() {
    mkdir -p "$1"
    python3 - "$1" "$2" <<'PY'
import sys
from PIL import Image
for i in range(int(sys.argv[2])):
    Image.effect_noise((800, 600), 40 + i % 40).convert("RGB").save(f"{sys.argv[1]}/img{i:04d}.jpg", quality=90)
PY
}

bench_redis_start() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
        --daemonize yes --logfile "$work/redis.log" >/dev/null
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
    url=redis://127.0.0.1:$port
}

# Random full-size weights unless a checkpoint was given, and the weight formats of
# BENCH_WEIGHT_FLAGS (e.g. "--weights fp8 --vision-weights fp8"; default: the checkpoint's bf16).
bench_weights() {
    [ -n "${BENCH_MODEL:-}" ] || echo --random-weights 1
    echo "${BENCH_WEIGHT_FLAGS:-}"
}

# One replica (mpirun -np $tp) on the random-weight model; waits until it is ready.
bench_serve_start() {
    serve_prefix=$1
    shift
    # shellcheck disable=SC2046 # bench_weights: flags split on purpose
    mpirun --bind-to none -np "$tp" "$B/bin/glm4v-serve" --device "$device" --tp "$tp" \
        --model "$work/model" $(bench_weights) --redis "$url" --prefix "$serve_prefix" \
        --server-id "$serve_prefix" "$@" >"$work/serve-$serve_prefix.log" 2>&1 &
    serve_pid=$!
    until grep -q ready "$work/serve-$serve_prefix.log" 2>/dev/null; do
        kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve-$serve_prefix.log"; exit 1; }
        sleep 1
    done
    grep ready "$work/serve-$serve_prefix.log"
}

# SIGTERM drains (nothing is running by now); a stuck replica is killed after 20 s.
bench_serve_stop() {
    [ -n "$serve_pid" ] || return 0
    pkill -TERM -f -- "--server-id $serve_prefix" || true
    for _ in $(seq 40); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$serve_pid" 2>/dev/null || true
    pkill -9 -f -- "--server-id $serve_prefix" || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
}

bench_cleanup() {
    bench_serve_stop
    [ -n "$port" ] && redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
    rm -rf "$work"
}
trap bench_cleanup EXIT
