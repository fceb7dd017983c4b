"""Helper of scripts/bench-image.sh: makes the benchmark images and times the Python reference
pipeline (Pillow decode + convert("RGB") + resize BICUBIC + numpy ToTensor/Normalize in float32).

  bench_pillow.py make DIR                       writes photo_4000x3000.jpg, screen_1024x768.png
  bench_pillow.py row FILE SIZE RUNS OURS        times Pillow on FILE and prints a markdown row;
                                                 OURS is test_image_bench's output line
"""
import io
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagegen  # noqa: E402

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def make(out_dir):
    rng = np.random.RandomState(7)
    Image.fromarray(imagegen.content(rng, 4000, 3000, 3)).save(
        os.path.join(out_dir, "photo_4000x3000.jpg"), quality=90)
    Image.fromarray(imagegen.content(rng, 1024, 768, 3)).save(os.path.join(out_dir, "screen_1024x768.png"))


def time_pillow(data, size, runs):
    stages = {"decode": [], "resize": [], "normalize": [], "total": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        im = Image.open(io.BytesIO(data)).convert("RGB")
        t1 = time.perf_counter()
        im = im.resize((size, size), Image.BICUBIC)
        t2 = time.perf_counter()
        x = np.asarray(im).transpose(2, 0, 1).astype(np.float32) / np.float32(255)  # ToTensor
        x = (x - MEAN[:, None, None]) / STD[:, None, None]  # Normalize
        t3 = time.perf_counter()
        for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            stages[k].append(v * 1e3)
    return {k: statistics.median(v) for k, v in stages.items()}


def parse_ours(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split())}


def row(path, size, runs, ours_line):
    with open(path, "rb") as f:
        data = f.read()
    pil = time_pillow(data, size, runs)
    ours = parse_ours(ours_line)
    name = os.path.basename(path)
    print("| %s -> %d | %.1f (%.1f / %.1f / %.1f) | %.1f (%.1f / %.1f / %.1f) | %.2fx |" % (
        name, size, ours["preprocess_ms"], ours["decode_ms"], ours["resize_ms"], ours["normalize_ms"],
        pil["total"], pil["decode"], pil["resize"], pil["normalize"], pil["total"] / ours["preprocess_ms"]))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "row":
        row(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(__doc__)
