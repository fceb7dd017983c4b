"""Deterministic test images in every mode the decoder must handle, encoded with Pillow (or by hand
where Pillow cannot write the variant: low-depth grey, 16-bit colour, interlaced PNGs).

Used by compare_pillow.py (the Pillow comparison test), bench_pillow.py and to make fuzz seeds.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def content(rng, w, h, channels):
    """Smooth gradients + blobs + a little noise: JPEG-realistic, but with edges for the filter."""
    small = rng.randint(0, 256, (max(1, h // 64 + 2), max(1, w // 64 + 2), channels), dtype=np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:  # 2 or 4+ channels: build per channel
        planes = [content(rng, w, h, 1)[..., 0] for _ in range(channels)]
        return np.stack(planes, axis=-1)
    base = Image.fromarray(small[..., 0] if channels == 1 else small, mode)
    arr = np.asarray(base.resize((w, h), Image.BILINEAR)).astype(np.int16)
    if arr.ndim == 2:
        arr = arr[..., None]
    noise = rng.randint(-6, 7, arr.shape).astype(np.int16)
    arr = arr + noise
    # a few hard-edged rectangles
    for _ in range(3):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        x1, y1 = min(w, x0 + rng.randint(1, w + 1)), min(h, y0 + rng.randint(1, h + 1))
        arr[y0:y1, x0:x1] = rng.randint(0, 256, channels)
    return np.clip(arr, 0, 255).astype(np.uint8)


# ---- hand-written PNG encoder for what Pillow cannot write -------------------------------------

def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _pack_rows(samples, bit_depth):
    """samples: [h, w*channels] integer array -> list of packed row bytes."""
    if bit_depth == 16:
        return [r.astype(">u2").tobytes() for r in samples]
    if bit_depth == 8:
        return [r.astype(np.uint8).tobytes() for r in samples]
    per_byte = 8 // bit_depth
    rows = []
    for r in samples:
        pad = (-len(r)) % per_byte
        r = np.concatenate([r, np.zeros(pad, dtype=r.dtype)]).astype(np.uint8).reshape(-1, per_byte)
        shifts = np.arange(per_byte - 1, -1, -1) * bit_depth
        rows.append((r << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


def _filter_rows(rows, bpp, rng):
    """Applies a random PNG filter (0..4) per row so the decoder's unfiltering is exercised."""
    out = []
    prev = bytes(len(rows[0])) if rows else b""
    for row in rows:
        ft = int(rng.randint(0, 5))
        cur = np.frombuffer(row, np.uint8).astype(np.int32)
        up = np.frombuffer(prev, np.uint8).astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if ft == 0:
            f = cur
        elif ft == 1:
            f = cur - left
        elif ft == 2:
            f = cur - up
        elif ft == 3:
            f = cur - (left + up) // 2
        else:
            p = left + up - ul
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
            f = cur - pred
        out.append(bytes([ft]) + (f & 0xFF).astype(np.uint8).tobytes())
        prev = row
    return out


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def encode_png(samples, color_type, bit_depth, rng, interlace=False, plte=None, trns=None):
    """samples: [h, w, channels] array of raw sample values."""
    h, w, ch = samples.shape
    bpp = max(1, ch * bit_depth // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            raw += b"".join(_filter_rows(_pack_rows(sub.reshape(sub.shape[0], -1), bit_depth), bpp, rng))
    else:
        raw = b"".join(_filter_rows(_pack_rows(samples.reshape(h, -1), bit_depth), bpp, rng))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, int(interlace)))
    if plte is not None:
        out += _chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += _chunk(b"tRNS", bytes(trns))
    comp = zlib.compress(raw, 6)
    for i in range(0, len(comp), 65536):  # several IDAT chunks for big images
        out += _chunk(b"IDAT", comp[i:i + 65536])
    return out + _chunk(b"IEND", b"")


# ---- the catalogue of variants ------------------------------------------------------------------

def _pil_bytes(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def make_variant(kind, rng, w, h):
    """Returns the encoded bytes of a w x h image of the given kind."""
    if kind.startswith("jpeg_rgb_q"):
        q, sub = kind[len("jpeg_rgb_q"):].split("_s")
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "JPEG", quality=int(q), subsampling=int(sub))
    if kind == "jpeg_gray":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 1)[..., 0], "L"), "JPEG", quality=85)
    if kind == "jpeg_cmyk":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 4), "CMYK"), "JPEG", quality=90)
    if kind == "jpeg_progressive":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "JPEG", quality=80, progressive=True)
    if kind == "jpeg_progressive_gray":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 1)[..., 0], "L"), "JPEG", progressive=True)
    if kind == "jpeg_exif_rotated":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "JPEG", quality=90, exif=_exif_orientation(6))
    if kind == "jpeg_optimized":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "JPEG", quality=70, optimize=True)
    if kind == "png_rgb":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "PNG", compress_level=1)
    if kind == "png_rgba":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 4), "RGBA"), "PNG")
    if kind == "png_l":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 1)[..., 0], "L"), "PNG")
    if kind == "png_la":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 2), "LA"), "PNG")
    if kind in ("png_p", "png_p_trns", "png_p4", "png_p2", "png_p1"):
        colors = {"png_p4": 16, "png_p2": 4, "png_p1": 2}.get(kind, 256)
        im = Image.fromarray(content(rng, w, h, 3)).quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
        kw = {"bits": {16: 4, 4: 2, 2: 1}[colors]} if colors < 256 else {}
        if kind == "png_p_trns":
            kw["transparency"] = bytes(rng.randint(0, 256, 40).astype(np.uint8))
        return _pil_bytes(im, "PNG", **kw)
    if kind == "png_p_short_palette":  # indices beyond PLTE: Pillow's grey ramp
        idx = rng.randint(0, 256, (h, w, 1))
        return encode_png(idx, 3, 8, rng, plte=rng.randint(0, 256, 3 * 100).astype(np.uint8))
    if kind == "png_1bit":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 1)[..., 0] > 128), "PNG")
    if kind in ("png_gray2", "png_gray4"):
        depth = int(kind[-1])
        return encode_png(rng.randint(0, 1 << depth, (h, w, 1)), 0, depth, rng)
    if kind == "png_gray16":  # mostly small values so Pillow's clip to 255 is visible both ways
        vals = np.where(rng.rand(h, w, 1) < 0.5, rng.randint(0, 300, (h, w, 1)), rng.randint(0, 65536, (h, w, 1)))
        return encode_png(vals, 0, 16, rng)
    if kind == "png_rgb16":
        return encode_png(rng.randint(0, 65536, (h, w, 3)), 2, 16, rng)
    if kind == "png_rgba16":
        return encode_png(rng.randint(0, 65536, (h, w, 4)), 6, 16, rng)
    if kind == "png_la16":
        return encode_png(rng.randint(0, 65536, (h, w, 2)), 4, 16, rng)
    if kind == "png_gray_trns":
        return encode_png(content(rng, w, h, 1), 0, 8, rng, trns=b"\x00\x80")
    if kind == "png_rgb_trns":
        return encode_png(content(rng, w, h, 3), 2, 8, rng, trns=b"\x00\x10\x00\x20\x00\x30")
    if kind == "png_interlaced_rgb":
        return encode_png(content(rng, w, h, 3), 2, 8, rng, interlace=True)
    if kind == "png_interlaced_p2":
        return encode_png(rng.randint(0, 4, (h, w, 1)), 3, 2, rng, interlace=True,
                          plte=rng.randint(0, 256, 12).astype(np.uint8))
    if kind == "png_interlaced_la16":
        return encode_png(rng.randint(0, 65536, (h, w, 2)), 4, 16, rng, interlace=True)
    if kind == "webp_lossy":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "WEBP", quality=80)
    if kind == "webp_lossless":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 3)), "WEBP", lossless=True, method=0)
    if kind == "webp_rgba_lossy":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 4), "RGBA"), "WEBP", quality=70)
    if kind == "webp_rgba_lossless":
        return _pil_bytes(Image.fromarray(content(rng, w, h, 4), "RGBA"), "WEBP", lossless=True, exact=True, method=0)
    raise ValueError(kind)


KINDS = (
    [f"jpeg_rgb_q{q}_s{s}" for q in (30, 75, 95) for s in (0, 1, 2)] + ["jpeg_rgb_q100_s0", "jpeg_rgb_q50_s2"]
    + ["jpeg_gray", "jpeg_cmyk", "jpeg_progressive", "jpeg_progressive_gray", "jpeg_exif_rotated",
       "jpeg_optimized"]
    + ["png_rgb", "png_rgba", "png_l", "png_la", "png_p", "png_p_trns", "png_p4", "png_p2", "png_p1",
       "png_p_short_palette", "png_1bit", "png_gray2", "png_gray4", "png_gray16", "png_rgb16",
       "png_rgba16", "png_la16", "png_gray_trns", "png_rgb_trns", "png_interlaced_rgb",
       "png_interlaced_p2", "png_interlaced_la16"]
    + ["webp_lossy", "webp_lossless", "webp_rgba_lossy", "webp_rgba_lossless"]
)

# Sizes that hit edge cases of the resampler: 1-pixel sides, a pass skipped (one side already S),
# no resize at all, exact 2x / 0.5x factors.
EDGE_SIZES = [(1, 1), (1, 517), (517, 1), (2, 3), (1120, 1120), (1120, 733), (733, 1120), (56, 56),
              (84, 84), (560, 560), (2240, 1120), (28, 28), (4000, 3000)]


def catalogue(count, seed):
    """Yields (index, kind, width, height, bytes) for `count` deterministic images."""
    rng = np.random.RandomState(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        if i < len(EDGE_SIZES):
            w, h = EDGE_SIZES[i]
        else:
            r = rng.rand()
            if r < 0.12:
                w, h = rng.randint(1, 17), rng.randint(1, 17)
            elif r < 0.85:
                w, h = rng.randint(16, 900), rng.randint(16, 900)
            elif r < 0.97:
                w, h = rng.randint(900, 2000), rng.randint(700, 1600)
            else:
                w, h = rng.randint(2000, 4001), rng.randint(1500, 3001)
        if not (kind.startswith("jpeg") or kind == "png_rgb") and i >= len(EDGE_SIZES):
            # big images only where encoding is fast (the hand-written PNG encoder is Python)
            w, h = min(w, 1500), min(h, 1200)
        yield i, kind, int(w), int(h), make_variant(kind, np.random.RandomState((seed * 1000 + i) % (1 << 32)), int(w), int(h))


def write_seeds(out_dir):
    """A few tiny valid images of every kind, as a fuzzing seed corpus (fuzz_image)."""
    import os
    os.makedirs(out_dir, exist_ok=True)
    for i, kind in enumerate(KINDS):
        data = make_variant(kind, np.random.RandomState(i), 7 + i % 5, 5 + i % 3)
        with open(os.path.join(out_dir, "%02d_%s" % (i, kind)), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "seeds":
        sys.exit("usage: imagegen.py seeds DIR")
    write_seeds(sys.argv[2])
