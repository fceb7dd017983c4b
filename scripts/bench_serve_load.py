#!/usr/bin/env python3
"""Open-loop load for scripts/bench-serve.sh: sends image + question jobs with glm4v-submit at a
fixed Poisson arrival rate (or all at once with rate 0 = saturation), collects every Result and
prints throughput and time-to-first-token percentiles as one machine-readable line.

    bench_serve_load.py SUBMIT REDIS_URL PREFIX RATE N_JOBS IMAGE_DIR MAX_NEW [METRICS_URL]

With METRICS_URL (the server's Prometheus /metrics), it also prints the share of the run's wall
time in which the engine ran no step (glm4v_step_duration_seconds_sum: model step + sampling): at
saturation that is the overhead of the queue path (Redis, decoding, scheduling, streaming).
"""
import glob, json, random, subprocess, sys, time, urllib.request


def step_seconds(url):
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        if line.startswith("glm4v_step_duration_seconds_sum"):
            return float(line.split()[-1])
    return 0.0


submit, url, prefix, rate, n, image_dir, max_new = sys.argv[1:8]
rate, n, max_new = float(rate), int(n), int(max_new)
metrics = sys.argv[8] if len(sys.argv) > 8 else None
images = sorted(glob.glob(image_dir + "/*.jpg"))
questions = ["Describe the picture in detail.", "What is in the image?", "What colors do you see?",
             "Is there any text in the picture?"]
rnd = random.Random(1)
busy0 = step_seconds(metrics) if metrics else 0.0
procs, t0 = [], time.time()
next_t = t0
for i in range(n):
    if rate > 0:
        next_t += rnd.expovariate(rate)
        time.sleep(max(0.0, next_t - time.time()))
    args = [submit, "--redis", url, "--prefix", prefix, "--json", "--ignore-eos", "--temperature", "0",
            "--max-new-tokens", str(max_new), "--image", images[i % len(images)],
            "--prompt", questions[i % len(questions)], "--timeout", "600"]
    procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
results = []
for p in procs:
    out, _ = p.communicate()
    try:
        results.append(json.loads(out))
    except ValueError:
        pass
elapsed = time.time() - t0
busy = step_seconds(metrics) - busy0 if metrics else 0.0
ok = [r for r in results if not r.get("error")]
tokens = sum(len(r["token_ids"]) for r in ok)
ttft = sorted(r["timings"]["queue_ms"] + r["timings"]["prefill_ms"] for r in ok) or [0]
total = sorted(r["timings"]["total_ms"] for r in ok) or [0]
pct = lambda a, q: a[min(len(a) - 1, int(len(a) * q))]
print(f"serve rate={rate:g} jobs={n} ok={len(ok)} elapsed_s={elapsed:.2f} images_per_s={len(ok) / elapsed:.2f} "
      f"tokens_per_s={tokens / elapsed:.1f} ttft_p50_ms={pct(ttft, .5):.1f} ttft_p99_ms={pct(ttft, .99):.1f} "
      f"latency_p50_ms={pct(total, .5):.1f} latency_p99_ms={pct(total, .99):.1f}"
      + (f" engine_busy_s={busy:.2f} outside_steps_pct={100 * (elapsed - busy) / elapsed:.1f}" if metrics else ""))
