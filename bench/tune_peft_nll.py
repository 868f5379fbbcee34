#!/usr/bin/env python3
"""Loads an ila-tune adapter with PeftModel.from_pretrained and prints the mean response-token
NLL over the first N rows of an Alpaca JSONL file (DESIGN.md section 5), float32 on the CPU, and
the modules PEFT adapted, as JSON: {"mean_nll", "tokens", "adapted": [...]}.

    python3 bench/tune_peft_nll.py BASE ADAPTER DATA.jsonl [--limit N] [--seq-len L]
"""
import argparse, json, os, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tune_reference import alpaca_rows  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("base"); ap.add_argument("adapter"); ap.add_argument("data")
ap.add_argument("--limit", type=int, default=16); ap.add_argument("--seq-len", type=int, default=64)
a = ap.parse_args()
tok = AutoTokenizer.from_pretrained(a.base)
model = AutoModelForCausalLM.from_pretrained(a.base, torch_dtype=torch.float32)
bos, eos = model.config.bos_token_id, model.config.eos_token_id
model = PeftModel.from_pretrained(model, a.adapter).eval()
adapted = sorted(n[len("base_model.model."):] for n, m in model.named_modules()
                 if hasattr(m, "lora_A") and len(getattr(m, "lora_A")) > 0)
total, count = 0.0, 0
with torch.no_grad():
    for ids, lab in alpaca_rows(a.data, tok, bos, eos, a.seq_len, a.limit, drop_empty=False):
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
        target = torch.tensor(lab[1:])
        total += torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
        count += int((target != -100).sum())
print(json.dumps({"mean_nll": total / count, "tokens": count, "adapted": adapted}))
