"""Random-weight checkpoints of real model shapes for bench/scale: OUT/base (LlamaForCausalLM, bf16,
sharded safetensors + model.safetensors.index.json, config.json, the test bed's tokenizer) and OUT/lora
(a PEFT LoRA adapter r=8, alpha=16 on every linear kind, random non-zero B so that Δ = scale·B·A ≠ 0).

Shapes (--shape):
  tiny  hidden 256, intermediate 1024, 4 blocks, 8 / 4 heads (head_dim 32), vocab 4096, tied    (seconds)
  1b    Llama-3.2-1B: hidden 2048, intermediate 8192, 16 blocks, 32 / 8 heads (head_dim 64),
        vocab 128256, tied embeddings, rope_theta 500000, no rope_scaling
  7b    Llama-2-7B: hidden 4096, intermediate 11008, 32 blocks, 32 / 32 heads, vocab 32000, untied

The model is never materialised: the module tree is built on the meta device (for the tensor names
and shapes transformers uses), then each shard's tensors are drawn in bf16 directly and written before
the next shard is drawn, so the peak memory is about one shard (--max-shard-gb, default 2) even for
the 7B (13.5 GB on disk). Weights: linear and embedding N(0, 0.02) as transformers initialises them,
norm weights 1 + N(0, 0.1). LoRA A as PEFT initialises it (Kaiming uniform, bound 1/√in), B = 0.05·N(0, 1),
float32 as PEFT saves it. The tokenizer is the test bed's (vocab 4096; the models' vocab is larger, so
every id is valid). Seeded: the same command writes the same files. An OUT that already holds both
models is left alone (delete it to rebuild).

Usage: python3 bench/make_scale_models.py OUT --shape tiny|1b|7b [--tokenizer DIR] [--seed 0]
Prints one JSON line: {"shape", "base", "lora", "params", "bytes", "built": true|false, "seconds"}.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {
    "tiny": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=32, vocab_size=4096, tie_word_embeddings=True,
                 rope_theta=10000.0, max_position_embeddings=2048, rms_norm_eps=1e-5),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
               rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, head_dim=128, vocab_size=32000, tie_word_embeddings=False,
               rope_theta=10000.0, max_position_embeddings=4096, rms_norm_eps=1e-5),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("out")
ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "../../shared/testbed/small/base-A"))
ap.add_argument("--max-shard-gb", type=float, default=2.0)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

base_dir, lora_dir = os.path.join(a.out, "base"), os.path.join(a.out, "lora")


def done():
    idx = os.path.join(base_dir, "model.safetensors.index.json")
    if not (os.path.exists(os.path.join(base_dir, "config.json")) and os.path.exists(idx)
            and os.path.exists(os.path.join(base_dir, "tokenizer.json"))
            and os.path.exists(os.path.join(lora_dir, "adapter_model.safetensors"))
            and os.path.exists(os.path.join(lora_dir, "adapter_config.json"))):
        return False
    files = set(json.load(open(idx))["weight_map"].values())
    return all(os.path.exists(os.path.join(base_dir, f)) for f in files)


def summary(built, seconds):
    idx = json.load(open(os.path.join(base_dir, "model.safetensors.index.json")))
    cfg = json.load(open(os.path.join(base_dir, "config.json")))
    print(json.dumps({"shape": a.shape, "base": base_dir, "lora": lora_dir, "params": idx["metadata"]["total_size"] // 2,
                      "bytes": idx["metadata"]["total_size"], "hidden": cfg["hidden_size"],
                      "intermediate": cfg["intermediate_size"], "blocks": cfg["num_hidden_layers"],
                      "vocab": cfg["vocab_size"], "built": built, "seconds": round(seconds, 1)}))


if done():
    summary(False, 0.0)
    sys.exit(0)

from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

t0 = time.time()
shape = dict(SHAPES[a.shape])
rope_theta = shape.pop("rope_theta")
cfg = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0, attention_bias=False, mlp_bias=False,
                  hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
cfg.architectures = ["LlamaForCausalLM"]
cfg.dtype = "bfloat16"

with torch.device("meta"):
    meta = LlamaForCausalLM(cfg)
tensors = [(n, tuple(p.shape)) for n, p in meta.state_dict().items()]
if cfg.tie_word_embeddings:
    tensors = [(n, s) for n, s in tensors if n != "lm_head.weight"]
del meta

torch.manual_seed(a.seed)
gen = torch.Generator().manual_seed(a.seed)

# Plan the shards (in state_dict order, as save_pretrained does), then draw and write one at a time.
limit = int(a.max_shard_gb * 1e9)
shards, cur, cur_bytes = [], [], 0
for n, s in tensors:
    b = math.prod(s) * 2
    if cur and cur_bytes + b > limit:
        shards.append(cur)
        cur, cur_bytes = [], 0
    cur.append((n, s))
    cur_bytes += b
shards.append(cur)
os.makedirs(base_dir, exist_ok=True)
weight_map, total = {}, 0
for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    data = {}
    for n, s in shard:
        t = torch.empty(s, dtype=torch.bfloat16)
        if len(s) == 1:  # RMSNorm weights
            t.normal_(0.0, 0.1, generator=gen).add_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        data[n] = t
        weight_map[n] = fname
        total += t.numel() * 2
    save_file(data, os.path.join(base_dir, fname + ".tmp"), metadata={"format": "pt"})
    os.replace(os.path.join(base_dir, fname + ".tmp"), os.path.join(base_dir, fname))
    del data
    print(f"  wrote {fname} ({len(shard)} tensors)", file=sys.stderr)
cfg.save_pretrained(base_dir)
for f in ["tokenizer.json", "tokenizer_config.json"]:
    shutil.copy(os.path.join(a.tokenizer, f), base_dir)
with open(os.path.join(base_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

# The LoRA adapter, as PEFT saves it: adapter_config.json + adapter_model.safetensors (float32).
from peft import LoraConfig

os.makedirs(lora_dir, exist_ok=True)
shapes = dict(tensors)
lora = {}
for n, s in tensors:
    parts = n.split(".")
    if len(parts) >= 2 and parts[-2] in KINDS and parts[-1] == "weight":
        out_f, in_f = s
        mod = n[:-len(".weight")]
        A = torch.empty(8, in_f).uniform_(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f), generator=gen)
        B = 0.05 * torch.randn(out_f, 8, generator=gen)
        lora[f"base_model.model.{mod}.lora_A.weight"] = A
        lora[f"base_model.model.{mod}.lora_B.weight"] = B
save_file(lora, os.path.join(lora_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=KINDS, task_type="CAUSAL_LM",
           bias="none").save_pretrained(lora_dir)
summary(True, time.time() - t0)
