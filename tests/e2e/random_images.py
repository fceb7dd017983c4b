"""Writes N images of random pixels and random sizes for the end-to-end tests, reproducibly:
    random_images.py DIR --seed S --count N --size MIN MAX [--name img] [--alternate-jpg]
DIR/<name><i>.png for i < N (every even i a .jpg with --alternate-jpg: both decoders run)."""
import argparse
import random

from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--seed", type=int, required=True)
ap.add_argument("--count", type=int, required=True)
ap.add_argument("--size", type=int, nargs=2, required=True, metavar=("MIN", "MAX"))
ap.add_argument("--name", default="img")
ap.add_argument("--alternate-jpg", action="store_true")
a = ap.parse_args()
rnd = random.Random(a.seed)
for i in range(a.count):
    w, h = rnd.randint(*a.size), rnd.randint(*a.size)
    im = Image.new("RGB", (w, h))
    im.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(w * h)])
    ext = "jpg" if a.alternate_jpg and i % 2 == 0 else "png"
    im.save(f"{a.dir}/{a.name}{i}.{ext}")
