#!/usr/bin/env python3
"""The PyTorch baseline a user would reach for, on the shapes of scripts/bench-gpu.sh.

Decoder: transformers' GlmForCausalLM (the GLM-4 decoder architecture GLM-4V-9B uses) built from a
GlmConfig with the real sizes, random weights, bf16, attn_implementation="sdpa", constructed on the
GPU (no download):
  - prefill ms of one 1632-token prompt (the image prompt's length: 1602 image rows + 30 text);
  - decode tokens/s at batch 1 and 32 with a 1024-token context through generate() (greedy), with
    the default DynamicCache and with cache_implementation="static" (which generate() compiles
    with torch.compile on CUDA, as a user gets it).
Vision: a plain PyTorch EVA2-CLIP-E tower written from MODEL.md (63 post-norm layers, hidden 1792,
16 heads of 112, MLP 15360 with exact GELU, patch conv, 2x2 conv, GLU projector, boi/eoi, / 8), bf16,
F.scaled_dot_product_attention: ms for 1 and 4 images.

Attention alone: F.scaled_dot_product_attention on the vision shape (6401 rows, 16 heads of 112;
8 heads at TP 2; 4 images) and causal prefill (32 query heads over 2 kv heads of 128, 1632 and 4096
rows) with each of PyTorch's fused backends forced (SDPBackend.CUDNN_ATTENTION, FLASH_ATTENTION,
EFFICIENT_ATTENTION), q, k and v strided views of one packed qkv buffer as in our engine: ms and
TFLOP/s beside test_cuda_ops --bench's fa2 / cudnn figures.

Timing: CUDA events, warm-up runs first, median of the timed runs; decode step times are the
intervals between CUDA events recorded by a logits processor at each generated token.
Prints one machine-readable line per figure:  baseline <figure> key=value ... value=V unit=U
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CTX = 1024


def emit(figure, value, unit, **kw):
    parts = " ".join(f"{k}={v}" for k, v in kw.items())
    print(f"baseline {figure} {parts} value={value:.4g} unit={unit}".replace("  ", " "), flush=True)


def note(msg):
    print(f"baseline_torch: {msg}", file=sys.stderr, flush=True)


def cuda_time(fn, warmup, reps):
    """Median ms of fn() over reps runs after warmup runs, CUDA events around each."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


class bf16_default:
    """Parameters created in bf16 directly (half the memory and time of float32 then a cast)."""

    def __enter__(self):
        self.prev = torch.get_default_dtype()
        try:
            torch.set_default_dtype(torch.bfloat16)
        except (TypeError, RuntimeError):
            pass
        return self

    def __exit__(self, *exc):
        torch.set_default_dtype(self.prev)
        return False


def randomize_(module, std=0.02):
    """Random weights of a realistic scale (never zeros): matrices N(0, std), norm weights ~1."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, 0.02)


# ---------------------------------------------------------------- decoder (transformers)

def build_decoder(layers):
    import transformers
    from transformers import GlmConfig, GlmForCausalLM

    base = dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696,
                num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=2,
                head_dim=128, attention_bias=True, rms_norm_eps=1.5625e-07,
                max_position_embeddings=8192, tie_word_embeddings=False,
                pad_token_id=151329, eos_token_id=[151329, 151336, 151338])
    attempts = [
        dict(partial_rotary_factor=0.5,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(partial_rotary_factor=0.5, rope_theta=10000.0),
        dict(),
    ]
    config, last = None, None
    for extra in attempts:
        try:
            config = GlmConfig(**base, **extra)
            break
        except (TypeError, ValueError) as e:  # the config's signature moves between versions
            last = e
    if config is None:
        raise last
    config._attn_implementation = "sdpa"
    with bf16_default():
        with torch.device("cuda"):
            model = GlmForCausalLM(config).to(torch.bfloat16)
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")
        except Exception as e:  # older API
            note(f"set_attn_implementation: {e}")
    randomize_(model)
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    rot = getattr(config, "partial_rotary_factor", None)
    if rot is None and isinstance(getattr(config, "rope_parameters", None), dict):
        rot = config.rope_parameters.get("partial_rotary_factor")
    note(f"GlmForCausalLM: {n / 1e9:.2f} B parameters, layers {config.num_hidden_layers}, "
         f"attn {model.config._attn_implementation}, partial rotary {rot}, "
         f"transformers {transformers.__version__}")
    return model


class StepTimer:
    """A logits processor that records a CUDA event each time generate() produces a token."""

    def __init__(self):
        self.events = []

    def __call__(self, input_ids, scores):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self.events.append(ev)
        return scores

    def step_ms(self):
        torch.cuda.synchronize()
        e = self.events
        return [e[i].elapsed_time(e[i + 1]) for i in range(len(e) - 1)]


def bench_prefill(model, rows, warmup, reps):
    ids = torch.randint(0, 151329, (1, rows), device="cuda")

    def run():
        with torch.no_grad():
            try:
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
            except TypeError:
                model(input_ids=ids, use_cache=True)

    ms = cuda_time(run, warmup, reps)
    emit("prefill_ms", ms, "ms", rows=rows, kind="image_len_text", reps=reps)


def bench_decode(model, batch, cache, steps, warmups):
    from transformers import LogitsProcessorList

    ids = torch.randint(0, 151329, (batch, CTX), device="cuda")
    mask = torch.ones_like(ids)
    kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=steps + 1,
              min_new_tokens=steps + 1, pad_token_id=151329)
    if cache == "static":
        kw["cache_implementation"] = "static"
    for w in range(warmups):
        t0 = time.time()
        with torch.no_grad():
            model.generate(**kw)
        torch.cuda.synchronize()
        note(f"decode warm-up {w + 1}/{warmups} batch {batch} cache {cache}: {time.time() - t0:.1f} s")
    timer = StepTimer()
    torch.cuda.synchronize()
    t0 = time.time()
    with torch.no_grad():
        model.generate(**kw, logits_processor=LogitsProcessorList([timer]))
    torch.cuda.synchronize()
    wall = time.time() - t0
    st = timer.step_ms()
    if not st:
        raise RuntimeError("no decode steps were timed")
    med = statistics.median(st)
    emit("decode_tps", batch * 1000.0 / med, "tok/s", batch=batch, ctx=CTX, cache=cache,
         step_ms=f"{med:.4g}", mean_step_ms=f"{statistics.mean(st):.4g}", steps=len(st),
         generate_wall_s=f"{wall:.3g}")


# ---------------------------------------------------------------- vision tower (plain PyTorch)

class VisionAttention(nn.Module):
    def __init__(self, hv, heads):
        super().__init__()
        self.heads, self.hd = heads, hv // heads
        self.query_key_value = nn.Linear(hv, 3 * hv)
        self.dense = nn.Linear(hv, hv)

    def forward(self, x):
        b, s, hv = x.shape
        qkv = self.query_key_value(x).view(b, s, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # bidirectional
        return self.dense(out.transpose(1, 2).reshape(b, s, hv))


class VisionLayer(nn.Module):
    """Post-branch normalized: x + LN(attn(x)), then x + LN(mlp(x))."""

    def __init__(self, hv, heads, inter, eps):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hv, eps=eps)
        self.attention = VisionAttention(hv, heads)
        self.fc1 = nn.Linear(hv, inter)
        self.fc2 = nn.Linear(inter, hv)
        self.post_attention_layernorm = nn.LayerNorm(hv, eps=eps)

    def forward(self, x):
        x = x + self.input_layernorm(self.attention(x))
        return x + self.post_attention_layernorm(self.fc2(F.gelu(self.fc1(x))))


class VisionTower(nn.Module):
    def __init__(self, hv=1792, heads=16, layers=63, inter=15360, image=1120, patch=14, h=4096,
                 ffn=13696, eps=1e-6, scale=8.0):
        super().__init__()
        self.grid = image // patch
        self.scale = scale
        self.proj = nn.Conv2d(3, hv, patch, stride=patch)
        self.cls_embedding = nn.Parameter(torch.empty(1, hv))
        self.position_embedding = nn.Embedding(self.grid * self.grid + 1, hv)
        self.layers = nn.ModuleList(VisionLayer(hv, heads, inter, eps) for _ in range(layers))
        self.conv = nn.Conv2d(hv, h, 2, stride=2)
        self.linear_proj = nn.Linear(h, h, bias=False)
        self.norm1 = nn.LayerNorm(h)  # eps 1e-5, the default
        self.gate_proj = nn.Linear(h, ffn, bias=False)
        self.dense_h_to_4h = nn.Linear(h, ffn, bias=False)
        self.dense_4h_to_h = nn.Linear(ffn, h, bias=False)
        self.boi = nn.Parameter(torch.empty(1, 1, h))
        self.eoi = nn.Parameter(torch.empty(1, 1, h))

    def forward(self, pixels):
        b = pixels.shape[0]
        x = self.proj(pixels).flatten(2).transpose(1, 2)  # [b, g*g, hv], row-major grid
        x = torch.cat([self.cls_embedding.expand(b, 1, -1), x], dim=1)
        x = x + self.position_embedding.weight.unsqueeze(0)
        for layer in self.layers:
            x = layer(x)
        x = x[:, 1:].transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        x = self.conv(x).flatten(2).transpose(1, 2)  # [b, (g/2)^2, h]
        x = F.gelu(self.norm1(self.linear_proj(x)))
        x = self.dense_4h_to_h(F.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))
        x = torch.cat([self.boi.expand(b, -1, -1), x, self.eoi.expand(b, -1, -1)], dim=1)
        return x / self.scale


def bench_vision(counts, layers, reps_small):
    with bf16_default():
        with torch.device("cuda"):
            tower = VisionTower(layers=layers).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, 0.02)
    tower.eval()
    note(f"vision tower: {sum(p.numel() for p in tower.parameters()) / 1e9:.2f} B parameters")
    for n in counts:
        try:
            pixels = torch.randn(n, 3, 1120, 1120, device="cuda", dtype=torch.bfloat16)

            def run():
                with torch.no_grad():
                    tower(pixels)

            reps = reps_small if n == 1 else max(3, reps_small // 2)
            ms = cuda_time(run, 2, reps)
            emit("vision_ms", ms, "ms", n=n, per_image_ms=f"{ms / n:.4g}", reps=reps,
                 peak_gib=f"{torch.cuda.max_memory_allocated() / 2**30:.1f}")
        except torch.cuda.OutOfMemoryError:
            note(f"vision: {n} images do not fit")
        finally:
            pixels = None
            torch.cuda.empty_cache()
    del tower
    torch.cuda.empty_cache()


ATTENTION_SHAPES = [  # name, images, rows, q heads, kv heads, head dim, causal
    ("vision_tp1", 1, 6401, 16, 16, 112, False),
    ("vision_tp2", 1, 6401, 8, 8, 112, False),
    ("vision_4img", 4, 6401, 16, 16, 112, False),
    ("prefill_1632", 1, 1632, 32, 2, 128, True),
    ("prefill_4096", 1, 4096, 32, 2, 128, True),
]


def bench_attention(reps):
    """Each fused SDPA backend PyTorch has, forced, on our attention shapes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for name, b, s, hq, hkv, d, causal in ATTENTION_SHAPES:
        # one packed [b, s, (hq + 2 hkv) d] buffer, q / k / v as strided [b, h, s, d] views
        qkv = torch.randn(b, s, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
        q = qkv[..., : hq * d].unflatten(-1, (hq, d)).transpose(1, 2)
        k = qkv[..., hq * d: (hq + hkv) * d].unflatten(-1, (hkv, d)).transpose(1, 2)
        v = qkv[..., (hq + hkv) * d:].unflatten(-1, (hkv, d)).transpose(1, 2)
        flop = 4.0 * b * hq * s * s * d * (0.5 if causal else 1.0)
        if hkv != hq:
            # cuDNN on the grouped heads as stored (enable_gqa: no expanded copy), the layout ours
            # reads; PyTorch versions or backends without it are noted, not fatal
            try:
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    ms = cuda_time(lambda: F.scaled_dot_product_attention(
                        q, k, v, is_causal=causal, enable_gqa=True), 3, reps)
                emit("attention_ms", ms, "ms", shape=name, backend="cudnn_gqa")
                emit("attention_tflops", flop / ms / 1e9, "TFLOP/s", shape=name, backend="cudnn_gqa")
            except Exception as e:
                note(f"attention {name} cudnn_gqa: {str(e).splitlines()[0][:160]}")
            # grouped-query: each kv head serves hq / hkv query heads, as a user expands it
            k = k.repeat_interleave(hq // hkv, dim=1)
            v = v.repeat_interleave(hq // hkv, dim=1)
        for label, backend in backends:
            try:
                with sdpa_kernel(backend):
                    ms = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                   3, reps)
            except Exception as e:  # a backend that refuses the shape (head dim, layout)
                note(f"attention {name} {label}: {str(e).splitlines()[0][:160]}")
                continue
            emit("attention_ms", ms, "ms", shape=name, backend=label)
            emit("attention_tflops", flop / ms / 1e9, "TFLOP/s", shape=name, backend=label)
        del qkv, q, k, v
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decode-batches", default="1,32")
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--prefill-rows", type=int, default=1632)
    ap.add_argument("--vision", default="1,4")
    ap.add_argument("--layers", type=int, default=40, help="decoder layers (40; fewer for a try)")
    ap.add_argument("--vision-layers", type=int, default=63)
    ap.add_argument("--skip-static", action="store_true", help="no static-cache (compiled) decode")
    ap.add_argument("--skip-decoder", action="store_true")
    ap.add_argument("--skip-vision", action="store_true")
    ap.add_argument("--skip-attention", action="store_true")
    ap.add_argument("--attention-only", action="store_true",
                    help="only the SDPA backends on the attention shapes")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("baseline_torch: no CUDA device", file=sys.stderr)
        return 1
    import transformers
    emit("env", 0, "-", torch=torch.__version__, transformers=transformers.__version__,
         device=torch.cuda.get_device_name(0).replace(" ", "_"))
    torch.backends.cuda.matmul.allow_tf32 = True
    batches = [int(b) for b in args.decode_batches.split(",") if b]
    status = 0
    if not args.skip_attention:
        try:
            bench_attention(args.reps)
        except Exception as e:
            note(f"attention failed: {e!r}")
            status = 1
        if args.attention_only:
            return status
    model = None
    if not args.skip_decoder:
        model = build_decoder(args.layers)
        try:
            bench_prefill(model, args.prefill_rows, 3, args.reps)
        except Exception as e:
            note(f"prefill failed: {e!r}")
            status = 1
        for b in batches:
            try:
                bench_decode(model, b, "dynamic", args.decode_steps, 1)
            except Exception as e:
                note(f"decode batch {b} dynamic failed: {e!r}")
                status = 1
        emit("decoder_peak_gib", torch.cuda.max_memory_allocated() / 2**30, "GiB")
    if not args.skip_vision:
        try:
            bench_vision([int(n) for n in args.vision.split(",") if n], args.vision_layers, args.reps)
        except Exception as e:
            note(f"vision failed: {e!r}")
            status = 1
    if model is not None and not args.skip_static:
        for b in batches:
            try:
                bench_decode(model, b, "static", args.decode_steps, 2)
            except Exception as e:
                note(f"decode batch {b} static failed: {e!r}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
