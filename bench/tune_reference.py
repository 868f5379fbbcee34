#!/usr/bin/env python3
"""PyTorch + PEFT oracle for ila-tune: N steps of LoRA training with torch.optim.AdamW and
transformers' schedule, in float32 on the CPU, written as fixtures/tune/ (per-step loss and lr
in reference.json, the final factors in reference_final.safetensors).

The run is what `ila-tune --order file --init ADAPTER` does: step k takes rows
[k*B*G, (k+1)*B*G) of the file in order, the loss is the mean NLL over every response token of
those rows (token-weighted over all G micro-batches), each row its own sequence; rows whose
response seq_len cuts off entirely are left out first, as ila-tune leaves them out.

    python3 bench/tune_reference.py            # rewrites fixtures/tune/
"""
import argparse, json, math, os, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup, \
    get_linear_schedule_with_warmup, get_constant_schedule_with_warmup
from peft import PeftModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alpaca_rows(path, tok, bos, eos, seq_len, limit, drop_empty=True):
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        o = json.loads(line)
        inp = o.get("input") or ""
        prompt = (f"### Instruction:\n{o['instruction']}\n\n### Input:\n{inp}\n\n### Response:\n" if inp
                  else f"### Instruction:\n{o['instruction']}\n\n### Response:\n")
        p = tok(prompt, add_special_tokens=False).input_ids
        r = tok(o["output"], add_special_tokens=False).input_ids
        ids = ([bos] + p + r + [eos])[:seq_len]
        labels = ([-100] * (1 + len(p)) + r + [eos])[:seq_len]
        # As ila-tune: a row whose response is cut off entirely by seq_len is left out.
        if not drop_empty or any(t != -100 for t in labels[1:]):
            rows.append((ids, labels))
        if len(rows) == limit:
            break
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=os.path.join(ROOT, "fixtures/tiny/base-A"))
    ap.add_argument("--init", default=os.path.join(ROOT, "fixtures/tiny/lora-pyapi"))
    ap.add_argument("--data", default=os.path.join(ROOT, "fixtures/data/pyapi.train.jsonl"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures/tune"))
    a = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.base)
    model = AutoModelForCausalLM.from_pretrained(a.base, torch_dtype=torch.float32)
    bos, eos = model.config.bos_token_id, model.config.eos_token_id
    model = PeftModel.from_pretrained(model, a.init, is_trainable=True)
    model.train()  # lora_dropout is 0: train and eval modes compute the same
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    warmup = math.ceil(a.warmup * a.steps) if a.warmup < 1 else int(a.warmup)
    make = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}.get(a.schedule)
    sched = make(opt, warmup, a.steps) if make else get_constant_schedule_with_warmup(opt, warmup)
    per_step = a.batch * a.grad_accum
    rows = alpaca_rows(a.data, tok, bos, eos, a.seq_len, a.steps * per_step)
    assert len(rows) == a.steps * per_step, "not enough rows for the steps (no wrap-around in the reference)"
    losses, lrs = [], []
    for k in range(a.steps):
        step_rows = rows[k * per_step:(k + 1) * per_step]
        opt.zero_grad(set_to_none=False)
        n_tok = sum(sum(1 for t in lab[1:] if t != -100) for _, lab in step_rows)
        total = 0.0
        for ids, lab in step_rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            target = torch.tensor(lab[1:])
            nll = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
            (nll / n_tok).backward()
            total += nll.item()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(total / n_tok)
        print(f"step {k + 1}: loss {losses[-1]:.6f} lr {lrs[-1]:.3e}", file=sys.stderr)
    final = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            final[name.replace(".default.weight", ".weight")] = p.detach().clone().contiguous()
    os.makedirs(a.out, exist_ok=True)
    save_file(final, os.path.join(a.out, "reference_final.safetensors"))
    ref = {"tool": f"torch {torch.__version__}, transformers, peft (bench/tune_reference.py)",
           "config": {"base": os.path.relpath(a.base, ROOT), "init": os.path.relpath(a.init, ROOT),
                      "data": os.path.relpath(a.data, ROOT), "steps": a.steps, "batch": a.batch,
                      "grad_accum": a.grad_accum, "lr": a.lr, "schedule": a.schedule, "warmup": a.warmup,
                      "warmup_steps": warmup, "weight_decay": a.weight_decay, "seq_len": a.seq_len, "order": "file"},
           "losses": losses, "lrs": lrs}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
