#!/usr/bin/env python3
"""Test data for test_sweep.sh: N_IMAGES small random images (PNG and JPEG, odd sizes) and a
questions file with N_QUESTIONS questions per image, plus a few text-only rows.

usage: make_data.py DIR N_IMAGES N_QUESTIONS > questions.jsonl
Rows are written question-major (every image's first question, then every image's second, ...),
so the sweep's grouping by image is what brings the repeats of an image together."""
import json
import random
import sys

from PIL import Image

QUESTIONS = ["What is in the image?", "Describe the picture.", "图片中有什么？",
             "How many colors are there?", "Is it day or night?"]


def main():
    out_dir, n_images, n_questions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(11)
    names = []
    for i in range(n_images):
        w, h = rnd.randint(16, 96), rnd.randint(16, 96)
        im = Image.new("RGB", (w, h))
        im.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
                    for _ in range(w * h)])
        name = f"img/{i:04d}." + ("png" if i % 2 else "jpg")
        im.save(f"{out_dir}/{name}")
        names.append(name)
    for q in range(n_questions):
        for i, name in enumerate(names):
            row = {"id": f"r{i:04d}-q{q}", "image": name, "prompt": QUESTIONS[q % len(QUESTIONS)]}
            print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
