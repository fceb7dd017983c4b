#!/usr/bin/env bash
# The full-size GLM-4V-9B benchmark (issues 4 and 5), one command on the GPU machine:
#   source .devdeps/env.sh && scripts/bench-gpu.sh [--tp N] [--skip-baseline] [--no-static]
# 1. builds with CUDA (build-gpu; a failing whole-tree configure stops here, loudly);
# 2. bench_model on configs/glm-4v-9b with random weights (under mpirun -np N for --tp N): it first
#    measures the device ceilings (copy bandwidth, bf16 GEMM rate), then vision / prefill / decode /
#    memory (and at TP > 1 the NCCL share from a second pass with the collectives skipped
#    (--no-comm), then the memory run: --gpu-memory 22, 16 x 4K sequences);
# 3. the PyTorch baseline (scripts/baseline_torch.py: transformers' GlmForCausalLM + a plain PyTorch
#    vision tower, same shapes, bf16);
# 4. one markdown table: figure | ours | floor | ours/floor | baseline | ours/baseline | target,
#    printed and written to $OUT/perf-table.md (when OUT is set) and build-gpu/bench/perf-table.md.
# Environment: GLM4V_COMMIT (commit to print; else git, else the file COMMIT), BUILD_DIR (build-gpu),
# CUDA_ARCHS (90), JOBS (nproc), BASELINE_TIMEOUT (seconds, default 420), BENCH_ARGS (extra
# bench_model flags), BENCH_CFLAGS (C flags of this build, default -Wno-error=maybe-uninitialized:
# gcc 12/13 at -O3 flag a false positive in worker/comm_nccl.c).
set -euo pipefail
cd "$(dirname "$0")/.."
TP=1
RUN_BASELINE=1
BASELINE_FLAGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tp) TP=$2; shift 2 ;;
    --skip-baseline) RUN_BASELINE=0; shift ;;
    --no-static) BASELINE_FLAGS+=(--skip-static); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench-gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
CUDA=${CUDA_HOME:-/usr/local/cuda}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
LOGS=$BUILD_DIR/bench
mkdir -p "$LOGS"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  # whatever happens, the logs and the table come back with the device call
  # shellcheck disable=SC2154
  trap 'for f in perf-table.md configure.log build.log bench_model.log bench_nocomm.log bench_memory.log baseline.log attention.log; do
          [ -s "$LOGS/$f" ] && cp "$LOGS/$f" "$OUT/"; done; true' EXIT
fi

DATE=$(date -u +%Y-%m-%d)
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l || echo 0)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
COMMIT=${GLM4V_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)}
echo "bench-gpu: $DATE, ${NGPU}x ${DEVICE:-no GPU} (driver ${DRIVER:-?}), commit $COMMIT, tp $TP"
[ "$NGPU" -ge "$TP" ] || { echo "bench-gpu: --tp $TP needs $TP GPUs, found $NGPU" >&2; exit 1; }

# ---- build -----------------------------------------------------------------------------------------
# The packed libmicrohttpd.pc names gnutls as a private requirement, which the GPU machine lacks;
# nothing built here links it, so an empty stub satisfies pkg-config (as in scripts/gpu-test.sh).
if ! pkg-config --exists libmicrohttpd 2>/dev/null && ! pkg-config --exists gnutls 2>/dev/null; then
  mkdir -p "$BUILD_DIR/pkgconfig-stubs"
  printf 'Name: gnutls\nDescription: stub\nVersion: 3.8.0\n' >"$BUILD_DIR/pkgconfig-stubs/gnutls.pc"
  export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}:$PWD/$BUILD_DIR/pkgconfig-stubs"
fi
# cuDNN: the library PyTorch loads (its nvidia-cudnn wheel, built for the same CUDA), so that our
# attention and the baseline's SDPA run the same cuDNN; else whatever CMake finds
CUDNN_ARGS=()
CUDNN_DIR=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null || true)
if [ -n "$CUDNN_DIR" ] && [ -e "$CUDNN_DIR/libcudnn.so.9" ]; then
  CUDNN_ARGS=(-DGLM4V_CUDNN_LIBRARY="$CUDNN_DIR/libcudnn.so.9")
  export LD_LIBRARY_PATH="$CUDNN_DIR:${LD_LIBRARY_PATH:-}"
  echo "bench-gpu: cuDNN from $CUDNN_DIR"
fi
t0=$(date +%s)
if ! cmake -B "$BUILD_DIR" -S . -DGLM4V_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "${CUDNN_ARGS[@]}" \
    -DCMAKE_C_FLAGS="${BENCH_CFLAGS--Wno-error=maybe-uninitialized}" >"$LOGS/configure.log" 2>&1; then
  echo "bench-gpu: FAILED: cmake configure of the whole tree with CUDA (log: $LOGS/configure.log)" >&2
  tail -30 "$LOGS/configure.log" >&2
  exit 1
fi
BIN=$BUILD_DIR/bin/bench_model
if cmake --build "$BUILD_DIR" --target help | grep -q '\bbench_model\b'; then
  cmake --build "$BUILD_DIR" -j"$JOBS" --target bench_model >"$LOGS/build.log" 2>&1 \
    || { echo "bench-gpu: FAILED: build (log: $LOGS/build.log)" >&2; grep -E 'error|Error' "$LOGS/build.log" | head -30 >&2; exit 1; }
else
  # tests/bench is not wired into tests/CMakeLists.txt yet: build the libraries, link it here
  cmake --build "$BUILD_DIR" -j"$JOBS" --target glm4v_worker >"$LOGS/build.log" 2>&1 \
    || { echo "bench-gpu: FAILED: build (log: $LOGS/build.log)" >&2; grep -E 'error|Error' "$LOGS/build.log" | head -30 >&2; exit 1; }
  B=$BUILD_DIR
  NCCL_LIB=$(sed -n 's/^NCCL_LIBRARY:FILEPATH=//p' "$B/CMakeCache.txt")
  # shellcheck disable=SC2046
  mpicc -std=c11 -O2 -D_GNU_SOURCE -DGLM4V_HAVE_CUDA=1 -I. -I"$CUDA/include" \
    tests/bench/bench_model.c -o "$BIN" \
    "$B/worker/libglm4v_worker.a" "$B/kernels/libglm4v_kernels.a" \
    "$B/kernels/cuda/libglm4v_kernels_cuda.a" "$B/kernels/cpu/libglm4v_kernels_cpu.a" \
    "$B/kernels/libglm4v_kernels.a" "$B/common/libglm4v_common.a" \
    $(pkg-config --libs libcjson) "${NCCL_LIB:--lnccl}" -L"$CUDA/lib64" -lcudart -lcublasLt \
    -lstdc++ -fopenmp -lpthread -lm -Wl,-rpath,"$(dirname "${NCCL_LIB:-/usr/lib/x86_64-linux-gnu/x}")" \
    >>"$LOGS/build.log" 2>&1 \
    || { echo "bench-gpu: FAILED: linking bench_model" >&2; tail -20 "$LOGS/build.log" >&2; exit 1; }
fi
# the attention op alone (fa2 kernels beside cuDNN) comes from test_cuda_ops --bench-attention
if cmake --build "$BUILD_DIR" --target help | grep -q '\btest_cuda_ops\b'; then
  cmake --build "$BUILD_DIR" -j"$JOBS" --target test_cuda_ops >>"$LOGS/build.log" 2>&1 \
    || echo "bench-gpu: test_cuda_ops did not build: no attention rows" >&2
fi
echo "bench-gpu: built in $(( $(date +%s) - t0 )) s"

# ---- our engine ------------------------------------------------------------------------------------
run_bench() { # args: log file, bench_model flags...
  local log=$1; shift
  local cmd=("$BIN" --model configs/glm-4v-9b --device cuda --tp "$TP" "$@")
  if [ "$TP" -gt 1 ]; then
    cmd=(mpirun -np "$TP" --bind-to none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH "${cmd[@]}")
  fi
  echo "bench-gpu: ${cmd[*]}"
  "${cmd[@]}" 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}
status=0
t0=$(date +%s)
# shellcheck disable=SC2086
run_bench "$LOGS/bench_model.log" ${BENCH_ARGS:-} || { echo "bench-gpu: bench_model FAILED" >&2; status=1; }
echo "bench-gpu: bench_model took $(( $(date +%s) - t0 )) s"
: >"$LOGS/attention.log"
if [ -x "$BUILD_DIR/bin/test_cuda_ops" ]; then
  timeout 120 "$BUILD_DIR/bin/test_cuda_ops" --bench-attention 2>&1 | tee "$LOGS/attention.log" \
    | grep -E "^bench |plan|attention_full|prefill attention" || echo "bench-gpu: attention bench failed" >&2
fi
if [ "$TP" -gt 1 ]; then
  # the same steps with the all-reduces / all-gathers skipped: NCCL's share of each step
  run_bench "$LOGS/bench_nocomm.log" --no-comm --no-ceilings --vision 1 --text-prefill 0 \
    || { echo "bench-gpu: no-comm run FAILED" >&2; status=1; }
  run_bench "$LOGS/bench_memory.log" --mode memory --gpu-memory 22 \
    || { echo "bench-gpu: memory run FAILED" >&2; status=1; }
else
  : >"$LOGS/bench_memory.log"
  : >"$LOGS/bench_nocomm.log"
fi

# ---- PyTorch baseline ------------------------------------------------------------------------------
: >"$LOGS/baseline.log"
if [ "$RUN_BASELINE" = 1 ]; then
  t0=$(date +%s)
  timeout "${BASELINE_TIMEOUT:-420}" python3 scripts/baseline_torch.py "${BASELINE_FLAGS[@]}" 2>&1 \
    | tee "$LOGS/baseline.log" || echo "bench-gpu: baseline incomplete (failed or timed out)" >&2
  echo "bench-gpu: baseline took $(( $(date +%s) - t0 )) s"
fi

# ---- the table -------------------------------------------------------------------------------------
CMD="source .devdeps/env.sh && scripts/bench-gpu.sh --tp $TP"
python3 - "$LOGS" "$DATE" "${DEVICE:-unknown}" "$COMMIT" "$TP" "$CMD" "${DRIVER:-?}" <<'PY'
import re, sys
logs, date, device, commit, tp, cmd, driver = sys.argv[1:8]
tp = int(tp)

def parse(path, tag):
    out = []
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith(tag + " "):
            continue
        parts = line.split()
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        out.append((parts[1], kv))
    return out

ours = parse(f"{logs}/bench_model.log", "bench") + parse(f"{logs}/bench_memory.log", "bench")
base = parse(f"{logs}/baseline.log", "baseline")

def find(table, fig, **want):
    for f, kv in table:
        if f == fig and all(kv.get(k) == str(v) for k, v in want.items()):
            return kv
    return None

def num(kv, key="value"):
    try:
        return float(kv[key]) if kv and key in kv else None
    except ValueError:
        return None

def fmt(v, nd=None):
    if v is None:
        return "-"
    if nd is None:
        nd = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{nd}f}"

rows, notes = [], []
ceil_bw = num(find(ours, "ceiling_copy_gbps"))
ceil_gemm = num(find(ours, "ceiling_gemm_tflops"))

def add(label, kv, unit, higher, baseline=None, base_label="", target=None):
    v, fl = num(kv), num(kv, "floor")
    eff = None
    if v and fl:
        eff = v / fl if higher else fl / v
    speed = None
    if v and baseline:
        speed = v / baseline if higher else baseline / v
    tgt = "-"
    if target is not None:
        op, t = target
        ok = v is not None and (v >= t if op == ">=" else v <= t)
        tgt = f"{op} {fmt(t)} {'met' if ok else 'MISSED' if v is not None else 'not run'}"
        if v is not None and not ok:
            gap = (t / v - 1) if op == ">=" else (v / t - 1)
            notes.append(f"{label}: {fmt(v)} {unit} vs target {op} {fmt(t)}: misses by "
                         f"{100 * abs(1 - v / t):.0f}% (needs {1 + gap:.2f}x)")
    b = fmt(baseline) + (f" ({base_label})" if base_label and baseline else "")
    rows.append([label, fmt(v), fmt(fl), f"{eff:.2f}" if eff else "-", b,
                 f"{speed:.2f}x" if speed else "-", tgt])

bv = {n: num(find(base, "vision_ms", n=n)) for n in (1, 4)}
for n in (1, 4, 16):
    kv = find(ours, "vision_ms", n=n)
    if not kv:
        continue
    if n == 1:
        add("vision, 1 image (ms)", kv, "ms", False, bv[1], "", (("<=", 100) if tp == 1 else None))
    else:
        per = dict(kv)
        for k in ("value", "floor"):
            if num(kv, k):
                per[k] = str(num(kv, k) / n)
        add(f"vision, {n} images (ms per image)", per, "ms", False,
            bv[4] / 4 if n == 4 and bv[4] else None, "4 images" if n == 4 and bv[4] else "")
kv = find(ours, "prefill_ms", kind="image")
if kv:
    add(f"prefill, image prompt {kv.get('rows')} rows (ms)", kv, "ms", False,
        num(find(base, "prefill_ms")), "1632 text tokens", (("<=", 38) if tp == 1 else None))
# attention alone: our path (cuDNN where the build has it) beside our fa2 kernels and PyTorch's
# SDPA with its cuDNN backend forced, same shapes; floor: the measured bf16 GEMM rate
att = parse(f"{logs}/attention.log", "bench")
for shape, label in (("vision_tp1", "6401 rows, 16 heads of 112"),
                     ("vision_tp2", "6401 rows, 8 heads of 112 (TP 2)"),
                     ("prefill_1632", "causal 1632, 32q/2kv of 128"),
                     ("prefill_4096", "causal 4096, 32q/2kv of 128")):
    dnn = find(att, "attention_tflops", shape=shape, impl="cudnn")
    fa2 = num(find(att, "attention_tflops", shape=shape, impl="fa2"))
    if not dnn and fa2 is None:
        continue
    kv = dict(dnn or {"value": str(fa2)})
    if ceil_gemm:
        kv["floor"] = str(ceil_gemm)
    bl = num(find(base, "attention_tflops", shape=shape, backend="cudnn"))
    add(f"attention {label} (TFLOP/s; {'cudnn' if dnn else 'fa2'}, fa2 {fmt(fa2)})", kv, "TFLOP/s",
        True, bl, "PyTorch cuDNN", (">=", 450) if dnn or fa2 is not None else None)
kv = find(ours, "prefill_ms", kind="text")
if kv:
    add(f"prefill, {kv.get('rows')} text tokens, chunk {kv.get('chunk')} (ms)", kv, "ms", False)
targets = {1: 136, 32: 4500, 128: 9000}
for f, kv in ours:
    if f != "decode_tps":
        continue
    b = int(kv["batch"])
    st = num(find(base, "decode_tps", batch=b, cache="static"))
    dy = num(find(base, "decode_tps", batch=b, cache="dynamic"))
    bl, lab = (st, "static cache") if st else (dy, "dynamic cache")
    if st and dy:
        lab = f"static; dynamic {fmt(dy)}"
    add(f"decode, batch {b}, ctx {kv.get('ctx')} (tok/s)", kv, "tok/s", True, bl, lab,
        (">=", targets[b]) if tp == 1 and b in targets else None)
# NCCL's share of a step: 1 - (the step without collectives) / (the step), from the --no-comm run
nocomm = parse(f"{logs}/bench_nocomm.log", "bench")
for f, kv in ours:
    keys = {k: v for k, v in kv.items() if k in ("batch", "ctx", "kind", "rows", "n")}
    other = find(nocomm, f, **keys)
    if f not in ("decode_tps", "prefill_ms", "vision_ms") or not other or not num(kv) or not num(other):
        continue
    share = 1 - num(kv) / num(other) if f == "decode_tps" else 1 - num(other) / num(kv)
    fig = " ".join(f"{k}={v}" for k, v in keys.items())
    rows.append([f"NCCL share of step time ({f} {fig})", f"{100 * share:.1f}%", "-", "-", "-", "-", "-"])
mem_note = None
for f, kv in ours:
    if f == "memory_gib":
        r = kv.get("rank")
        g = lambda k: f"{float(kv.get(k, 0)):.1f}"
        bpk = num(find(base, "decoder_peak_gib"))
        rows.append([f"peak device memory, rank {r} (GiB: weights / KV / scratch / image pool)",
                     f"{fmt(num(kv))} ({g('weights_gib')} / {g('kv_gib')} / {g('scratch_gib')} / "
                     f"{g('image_pool_gib')})", "-", "-",
                     f"{fmt(bpk)} (decoder only)" if r == "0" and bpk else "-", "-", "-"])
        mem_note = ("peak device memory: this run's own capacities (KV for 256 x ~1.1 K tokens, "
                    "vision scratch for 16 images, 4096-token steps); the CUDA context is not counted")
    if f == "weights_gb":
        v = num(kv)
        rows.append([f"weights, rank {kv.get('rank')} (GB)", fmt(v, 2), "-", "-", "-", "-",
                     f"<= 14.5 {'met' if v is not None and v <= 14.5 else 'MISSED'}" if tp > 1 else "-"])
for f, kv in ours:
    if f in ("mem_prefill_ms", "mem_decode_tps"):
        label = ("memory run: prefill " if f == "mem_prefill_ms" else "memory run: decode ") + \
                " ".join(f"{k}={v}" for k, v in kv.items() if k in ("seqs", "ctx", "chunk", "batch"))
        rows.append([label + (" (ms)" if f == "mem_prefill_ms" else " (tok/s)"), fmt(num(kv)),
                     "-", "-", "-", "-", "-"])

env = find(base, "env") or {}
out = [f"### {date} · {device} x{tp if tp > 1 else 1} · commit {commit}", "",
       f"Command: `{cmd}` (driver {driver}; baseline: torch {env.get('torch', '-')}, "
       f"transformers {env.get('transformers', '-')}). Full-size GLM-4V-9B shapes "
       f"(configs/glm-4v-9b), random bf16 weights, TP {tp}.", "",
       f"Ceilings measured in the same run: device copy **{fmt(ceil_bw)} GB/s** (read + write), "
       f"bf16 GEMM **{fmt(ceil_gemm)} TFLOP/s** (8192^3 through glm_op_linear).", "",
       "| figure | ours | floor | ours/floor | baseline | ours/baseline | target |",
       "| --- | --- | --- | --- | --- | --- | --- |"]
out += ["| " + " | ".join(r) + " |" for r in rows]
out += ["",
        "floor: the time (or rate) the measured ceilings allow for the figure's FLOPs and bytes "
        "(decode: decoder + output weights and the KV read per step over copy bandwidth, or FLOPs over "
        "the GEMM rate, whichever is larger; vision and prefill: FLOPs over the GEMM rate), per rank "
        "at TP > 1. ours/floor: the fraction of the floor's speed reached (1.00 = at the floor). "
        "ours/baseline: speed-up over the PyTorch baseline (> 1: faster). Decode: tokens/s = batch / "
        "median step time, one token per sequence per step, greedy sampling on the device, context "
        "~1 K (the contexts are prefilled first). Baseline decode: transformers generate() greedy, "
        "static cache (compiled by generate) and DynamicCache; baseline prefill: one 1632-token "
        "forward of GlmForCausalLM; baseline vision: plain PyTorch tower, SDPA."]
v1 = find(ours, "vision_ms", n=1)
if v1 and v1.get("host_convert_ms"):
    out += ["", f"Our vision figures are whole glm_model_encode_images calls from float32 pixels on the "
               f"host: they include the host's bf16 conversion ({float(v1['host_convert_ms']):.1f} ms "
               f"per image) and the upload; the baseline's pixels are already on the GPU."]
if mem_note:
    out += ["", mem_note + "."]
if notes:
    out += ["", "Targets missed:"] + [f"- {n}" for n in notes]
text = "\n".join(out) + "\n"
print(text)
open(f"{logs}/perf-table.md", "w").write(text)
PY
exit $status
