#!/usr/bin/env python3
"""Load driver of scripts/bench-gateway.sh: N image + text chat jobs started all at once (the
cluster at saturation), through one of two paths, with the same kind of job content. Job i takes
the image IMAGE_DIR/img{FIRST+i:04d}.jpg, so every job of a run has its own image and a run
shares none with another (a run given FIRST past the last one's images): the engine does the
same vision work on both paths, no run is served by an earlier run's cache.

  submit  one glm4v-submit process per job (the protocol's own client, Redis straight)
  http    one thread per job POSTing to glm4v-gateway's /v1/chat/completions (stream or not)

Prints one line: path, jobs, wall seconds, jobs/s, generated tokens/s, latency p50/p99 (ms), the
number of failed jobs and the CPU seconds the clients used (this driver and, for submit, its
glm4v-submit processes).

usage: bench_gateway_load.py submit SUBMIT_BIN REDIS_URL PREFIX N IMAGE_DIR FIRST TOKENS
       bench_gateway_load.py http|http-stream GATEWAY_URL N IMAGE_DIR FIRST TOKENS
"""
import base64
import http.client
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

QUESTIONS = ["Describe the picture in detail.", "What is in the image?", "Describe the colors.",
             "Count the objects.", "Is there any text?", "Where was this taken?"]


def prompt(i):
    return f"{QUESTIONS[i % len(QUESTIONS)]} (request {i})"


def image_path(image_dir, first, i):
    return f"{image_dir}/img{first + i:04d}.jpg"


def run_submit(argv):
    binary, url, prefix, n = argv[0], argv[1], argv[2], int(argv[3])
    image_dir, first, tokens = argv[4], int(argv[5]), argv[6]

    def one(i):
        out = subprocess.run([binary, "--redis", url, "--prefix", prefix, "--json",
                              "--image", image_path(image_dir, first, i),
                              "--prompt", prompt(i), "--max-new-tokens", tokens, "--temperature", "0",
                              "--ignore-eos", "--timeout", "1200"],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return None
        return len(json.loads(out.stdout)["token_ids"])
    return n, one


def run_http(argv, stream):
    base, n, image_dir, first, tokens = argv[0], int(argv[1]), argv[2], int(argv[3]), int(argv[4])
    host, port = base.split("//", 1)[1].split(":")
    # request bodies built before the clock starts (as glm4v-submit's image files already exist on
    # disk), and plain http.client (no urllib opener, proxy lookup or handler chain per request):
    # the client's own work stays out of the path's figure
    bodies = []
    for i in range(n):
        uri = ("data:image/jpeg;base64," +
               base64.b64encode(open(image_path(image_dir, first, i), "rb").read()).decode())
        body = {"model": "glm-4v-9b", "temperature": 0, "max_tokens": tokens, "ignore_eos": True,
                "stream": stream, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": prompt(i)},
                    {"type": "image_url", "image_url": {"url": uri}}]}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
        bodies.append(json.dumps(body).encode())

    def one(i):
        conn = http.client.HTTPConnection(host, int(port), timeout=1200)
        try:
            conn.request("POST", "/v1/chat/completions", bodies[i],
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                return None
            if not stream:
                return json.loads(resp.read())["usage"]["completion_tokens"]
            used = None
            for line in resp:
                if line.startswith(b"data: {"):
                    ev = json.loads(line[6:])
                    if ev.get("usage"):
                        used = ev["usage"]["completion_tokens"]
            return used
        except OSError:
            return None
        finally:
            conn.close()
    return n, one


def main():
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "submit":
        n, one = run_submit(argv)
    elif mode in ("http", "http-stream"):
        n, one = run_http(argv, mode == "http-stream")
    else:
        sys.exit(f"unknown mode {mode}")
    results = [None] * n
    latency = [0.0] * n

    def worker(i):
        t = time.monotonic()
        results[i] = one(i)
        latency[i] = (time.monotonic() - t) * 1000

    def cpu_s():
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    cpu0 = cpu_s()
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    done = [r for r in results if r]
    lat = sorted(latency)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"gateway-bench path={mode} jobs={n} wall_s={wall:.3f} jobs_per_s={len(done) / wall:.2f} "
          f"tokens_per_s={sum(done) / wall:.1f} p50_ms={statistics.median(lat):.0f} p99_ms={p99:.0f} "
          f"failed={n - len(done)} client_cpu_s={cpu_s() - cpu0:.2f}")


main()
