#!/usr/bin/env python3
"""Writes a random-weight checkpoint in the exact Hugging Face layout of GLM-4V-9B for a config.json
(tensor names and shapes as in MODEL.md), as 2 safetensors shards + model.safetensors.index.json.
Used on the GPU machine for the "wide" test: real widths, few layers, so CUDA vs CPU and TP N vs
TP 1 compare the real shapes through the real loader.

    python3 scripts/make_wide_checkpoint.py configs/glm-4v-wide-test OUT_DIR [--seed 1]

Uses torch (on the GPU when there is one) where it is installed, else numpy (slower; other random
values for the same seed), so the CPU emulation study (docs/PERF.md) can run on any machine.
"""
import json, os, shutil, struct, sys

try:
    import torch
    from safetensors.torch import save_file
except ImportError:
    torch = None


def tensors(cfg):
    h, ffn, hd = cfg["hidden_size"], cfg["ffn_hidden_size"], cfg["kv_channels"]
    nq, nkv, vocab = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["padded_vocab_size"]
    v = cfg["vision_config"]
    hv, iv, ps, ch = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["in_channels"]
    out = [("transformer.embedding.word_embeddings.weight", (vocab, h), "w")]
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,), "norm"),
                (p + "self_attention.query_key_value.weight", ((nq + 2 * nkv) * hd, h), "w"),
                (p + "self_attention.query_key_value.bias", ((nq + 2 * nkv) * hd,), "b"),
                (p + "self_attention.dense.weight", (h, nq * hd), "w"),
                (p + "post_attention_layernorm.weight", (h,), "norm"),
                (p + "mlp.dense_h_to_4h.weight", (2 * ffn, h), "w"),
                (p + "mlp.dense_4h_to_h.weight", (h, ffn), "w")]
    out += [("transformer.encoder.final_layernorm.weight", (h,), "norm"),
            ("transformer.output_layer.weight", (vocab, h), "w"),
            ("transformer.rotary_pos_emb.inv_freq", (hd // 4,), "b")]
    pv = "transformer.vision."
    out += [(pv + "patch_embedding.proj.weight", (hv, ch, ps, ps), "w"),
            (pv + "patch_embedding.proj.bias", (hv,), "b"),
            (pv + "patch_embedding.cls_embedding", (1, hv), "w"),
            (pv + "patch_embedding.position_embedding.weight", (v["num_positions"], hv), "w")]
    for j in range(v["num_hidden_layers"]):
        p = pv + f"transformer.layers.{j}."
        out += [(p + "input_layernorm.weight", (hv,), "norm"), (p + "input_layernorm.bias", (hv,), "b"),
                (p + "attention.query_key_value.weight", (3 * hv, hv), "w"),
                (p + "attention.query_key_value.bias", (3 * hv,), "b"),
                (p + "attention.dense.weight", (hv, hv), "w"), (p + "attention.dense.bias", (hv,), "b"),
                (p + "mlp.fc1.weight", (iv, hv), "w"), (p + "mlp.fc1.bias", (iv,), "b"),
                (p + "mlp.fc2.weight", (hv, iv), "w"), (p + "mlp.fc2.bias", (hv,), "b"),
                (p + "post_attention_layernorm.weight", (hv,), "norm"),
                (p + "post_attention_layernorm.bias", (hv,), "b")]
    out += [(pv + "conv.weight", (h, hv, 2, 2), "w"), (pv + "conv.bias", (h,), "b"),
            (pv + "linear_proj.linear_proj.weight", (h, h), "w"),
            (pv + "linear_proj.norm1.weight", (h,), "norm"), (pv + "linear_proj.norm1.bias", (h,), "b"),
            (pv + "linear_proj.gate_proj.weight", (ffn, h), "w"),
            (pv + "linear_proj.dense_h_to_4h.weight", (ffn, h), "w"),
            (pv + "linear_proj.dense_4h_to_h.weight", (h, ffn), "w"),
            (pv + "boi", (1, 1, h), "w"), (pv + "eoi", (1, 1, h), "w")]
    return out


def bf16_bits(a):
    """numpy float32 -> bf16 bit patterns (uint16), round to nearest even."""
    import numpy as np
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16_numpy(part, path):
    """A safetensors file of bf16 tensors from (name, shape, uint16 array) without torch."""
    header, offset = {}, 0
    for name, shape, bits in part:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + bits.nbytes]}
        offset += bits.nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, bits in part:
            f.write(bits.tobytes())


def main():
    src, dst = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
    cfg = json.load(open(os.path.join(src, "config.json")))
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    if torch is not None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        g = torch.Generator(device=dev).manual_seed(seed)
        randn = lambda shape: torch.randn(shape, generator=g, device=dev)
    else:
        import numpy as np
        rng = np.random.default_rng(seed)
        randn = lambda shape: rng.standard_normal(shape, dtype=np.float32)
    shards, weight_map = [[], []], {}
    for k, (name, shape, kind) in enumerate(tensors(cfg)):
        if kind == "norm":
            t = 1.0 + 0.05 * randn(shape)
        else:
            t = (0.02 if kind == "w" else 0.01) * randn(shape)
        t = t.to(torch.bfloat16).cpu().contiguous() if torch is not None else bf16_bits(t)
        shards[k % 2].append((name, shape, t))
    for s, part in enumerate(shards):
        fname = f"model-{s + 1:05d}-of-00002.safetensors"
        if torch is not None:
            save_file({name: t for name, _, t in part}, os.path.join(dst, fname), metadata={"format": "pt"})
        else:
            save_bf16_numpy(part, os.path.join(dst, fname))
        for name, _, _ in part:
            weight_map[name] = fname
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=1)
    print(f"wrote {len(weight_map)} tensors to {dst}")


if __name__ == "__main__":
    main()
