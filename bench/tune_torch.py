#!/usr/bin/env python3
"""The PyTorch side of bench/tune: PEFT LoRA (r, alpha on every linear kind, factor form as PEFT
runs it) on a transformers model in float32 on the CPU, torch.optim.AdamW, the same rows per
step as `ila-tune --order file` (the file's first rows, consecutive), each row its own sequence
(no padding), loss = mean NLL over the step's response tokens. Prints one JSON line:
{"step_s", "tokens_per_s", "steps", "threads", "peak_rss_bytes", "losses"}; the first step is
a warm-up and not timed.

    python3 bench/tune_torch.py --base BASE --data DATA.jsonl --steps 5 --batch 16 --seq-len 256 --threads 2
"""
import argparse, json, os, resource, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tune_reference import alpaca_rows  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True); ap.add_argument("--data", required=True)
ap.add_argument("--steps", type=int, default=5); ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=256); ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--r", type=int, default=8); ap.add_argument("--alpha", type=float, default=16)
ap.add_argument("--dtype", default="float32", help="weights of the base model: float32 or bfloat16")
ap.add_argument("--padded", action="store_true",
                help="one forward per step over the rows right-padded to the longest, with an attention mask (as the Trainer batches)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
tok = AutoTokenizer.from_pretrained(a.base)
model = AutoModelForCausalLM.from_pretrained(a.base, dtype=getattr(torch, a.dtype))
bos, eos = model.config.bos_token_id, model.config.eos_token_id
cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, cfg)
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
rows = alpaca_rows(a.data, tok, bos, eos, a.seq_len, (a.steps + 1) * a.batch)
rows = [r for r in rows if any(t != -100 for t in r[1][1:])]
losses, times, tokens = [], [], []
for k in range(a.steps + 1):
    step_rows = [rows[(k * a.batch + j) % len(rows)] for j in range(a.batch)]
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=False)
    n_tok = sum(sum(1 for t in lab[1:] if t != -100) for _, lab in step_rows)
    total = 0.0
    if a.padded:
        L = max(len(i) for i, _ in step_rows)
        ids = torch.tensor([i + [0] * (L - len(i)) for i, _ in step_rows])
        mask = torch.tensor([[1] * len(i) + [0] * (L - len(i)) for i, _ in step_rows])
        labels = torch.tensor([l + [-100] * (L - len(l)) for _, l in step_rows])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                ignore_index=-100, reduction="sum")
        (nll / n_tok).backward()
        total = nll.item()
    for ids, lab in ([] if a.padded else step_rows):
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(lab[1:]), ignore_index=-100, reduction="sum")
        (nll / n_tok).backward()
        total += nll.item()
    opt.step()
    dt = time.perf_counter() - t0
    if k > 0:
        times.append(dt); tokens.append(sum(len(i) for i, _ in step_rows)); losses.append(total / n_tok)
step = sum(times) / len(times)
print(json.dumps({"padded": a.padded, "step_s": step, "tokens_per_s": sum(tokens) / sum(times), "steps": a.steps, "threads": a.threads,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "losses": losses}))
