#!/usr/bin/env python3
"""Random-weight Llama-3.2-1B-shape checkpoints for timing ila-diff at scale (bench/diff --scale):
OUTDIR/base and OUTDIR/full, both written by transformers' save_pretrained in bf16 as sharded
safetensors (model-0000k-of-0000n.safetensors + model.safetensors.index.json).

Shape of Llama-3.2-1B: hidden 2048, intermediate 8192, 16 blocks, 32 heads / 8 kv heads,
vocab 128256, tied embeddings, llama3 rope scaling (the diff does not read the config).
`full` is a full fine-tune stand-in: every parameter of `base` plus Gaussian noise of
--relative × that tensor's standard deviation, rounded to bf16, so ‖Δ‖/‖W‖ ≈ --relative
(default 0.01, within the 0.5-2% of real full fine-tunes; at this size most elements move by
a few bf16 ulps, as in a real bf16 checkpoint). Seeded: the same command writes the same weights.
Nothing it writes is committed; it needs about 5 GB of disk and 6 GB of memory.

Usage: python3 bench/make_scale_diff_models.py OUTDIR [--relative 0.01] [--seed 0] [--shard 1GB]
       [--layers 16]
"""
import argparse
import os

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

ap = argparse.ArgumentParser()
ap.add_argument("outdir")
ap.add_argument("--relative", type=float, default=0.01, help="noise std / weight std of the fine-tune")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--shard", default="1GB", help="max_shard_size of save_pretrained")
ap.add_argument("--layers", type=int, default=16, help="blocks (16 is Llama-3.2-1B)")
a = ap.parse_args()

cfg = LlamaConfig(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=a.layers,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000,
    eos_token_id=128001,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
)


def main():
    base_dir, full_dir = os.path.join(a.outdir, "base"), os.path.join(a.outdir, "full")
    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # norms start at 1: give them some spread like trained ones
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(base_dir, max_shard_size=a.shard)
    gen = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            std = p.float().std().item() if p.numel() > 1 else 1.0
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * (a.relative * std)
            p.copy_((p.float() + noise).to(torch.bfloat16))
    model.save_pretrained(full_dir, max_shard_size=a.shard)
    for d in (base_dir, full_dir):
        print(d, sorted(os.listdir(d)))


if __name__ == "__main__":
    main()
