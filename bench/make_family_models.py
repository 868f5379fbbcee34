"""Random-weight checkpoints of every architecture family at the small test bed's scale, for
bench/families: OUTDIR/<family>/base (bf16 model.safetensors + config + the test bed's tokenizer)
and OUTDIR/<family>/lora (PEFT LoRA r=8, alpha=16, every linear kind, random non-zero B).

Scale: 8 blocks, hidden 256, 8 heads / 4 kv heads (head_dim 32), intermediate 704, vocab 4096.
Seeded (--seed), so the same command writes the same weights. Every 1-D parameter (norm weights,
biases) gets random noise so that Gemma's (1 + w) norms, Qwen2's q/k/v biases and the q/k norms
of Qwen3/Gemma 3 are not at their identity initialisation.

Usage: python3 bench/make_family_models.py OUTDIR [--families llama,mistral,...] [--window 32]
"""
import argparse
import json
import os
import shutil

import torch
import transformers
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("outdir")
ap.add_argument("--families", default="llama,mistral,qwen2,qwen3,gemma,gemma2,gemma3,phi3")
ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "../../shared/testbed/small/base-A"))
ap.add_argument("--window", type=int, default=32, help="sliding window of Mistral, Gemma 2 and Gemma 3 "
                "(shorter than the rows: 50-171 tokens in the first 16 rows of pyapi.train.jsonl)")
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

SCALE = dict(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=1024,
             rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def config(family):
    T = transformers
    s = dict(SCALE)
    if family == "llama":
        return T.LlamaConfig(**s, tie_word_embeddings=True)
    if family == "mistral":
        return T.MistralConfig(**s, sliding_window=a.window)
    if family == "qwen2":
        del s["head_dim"]
        return T.Qwen2Config(**s)
    if family == "qwen3":
        return T.Qwen3Config(**s)
    if family == "gemma":
        return T.GemmaConfig(**s)
    if family == "gemma2":
        # query_pre_attn_scalar ≠ head_dim so the attention scale is not 1/√head_dim; default soft-caps 50 / 30.
        return T.Gemma2Config(**s, sliding_window=a.window, query_pre_attn_scalar=48)
    if family == "gemma3":
        # Layer types: every 6th layer global (block 5), the rest sliding with the local rope base.
        return T.Gemma3TextConfig(**s, sliding_window=a.window, query_pre_attn_scalar=48)
    if family == "phi3":
        del s["head_dim"]
        return T.Phi3Config(**s)
    raise SystemExit(f"unknown family {family}")


def main():
    for n, family in enumerate(a.families.split(",")):
        base_dir = os.path.join(a.outdir, family, "base")
        lora_dir = os.path.join(a.outdir, family, "lora")
        os.makedirs(base_dir, exist_ok=True)
        torch.manual_seed(a.seed * 1000 + n)
        cfg = config(family)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
        model = model.to(torch.bfloat16)
        model.save_pretrained(base_dir)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(a.tokenizer, f), base_dir)

        from peft import LoraConfig, get_peft_model
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                                      task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn_like(p, dtype=torch.float32))
        peft_model.save_pretrained(lora_dir)
        kinds = sorted({k.split(".")[-4] for k in peft_model.state_dict() if "lora_A" in k})
        print(json.dumps({"family": family, "architecture": cfg.architectures[0] if cfg.architectures else type(model).__name__,
                          "base": base_dir, "lora": lora_dir, "lora_kinds": kinds,
                          "params": sum(p.numel() for p in model.parameters())}))


main()
