"""PyTorch side of bench/scale: the strongest honest CPU ILA step we can write, every variant that fits.

One ILA step (DESIGN.md section 1) = J(s) = mean response-token NLL(θ0 + σ(s)·Δ) + λ·mean σ(s),
backward to s (one leaf tensor, one logit per LoRA layer; base weights and LoRA A/B frozen), one Adam
step. The mask is in PEFT's factor form, as in bench/ila_torch.py's LoraMaskedModel: the adapter on the
base model, each LoRA layer's scaling = scale_i·σ(s_i), y = x·W0ᵀ + γ_i·scale_i·(x·Aᵀ)·Bᵀ. Rows and
labels come from ila_torch.rows_from_jsonl (the Swift side's alpaca template and tokenisation).
Logits are computed only at loss positions (the hidden states are gathered before lm_head).

Variants (name precision/batching/attn):
  precision  f32       float32 weights (the bf16 checkpoint widened on load), float32 arithmetic
             bf16      bf16-resident weights (the checkpoint's own), torch.autocast('cpu', bfloat16)
             bf16f32w  float32 weights under the same autocast (casts every weight at every use)
  batching   padded    all rows as one right-padded batch, one backward
             mb4       length-sorted micro-batches of 4 rows, padded, backward per micro-batch (accumulate)
             rows      one unpadded row at a time, backward per row (accumulate)
  attn       eager | sdpa (transformers' attn_implementation)

Subcommands (JSON on stdout):
  step   --variant V ...   one variant in this process: warm-up step, then best of --repeats steps;
                           forward-only (no_grad) time; NLL and dJ/ds at s = s_init; peak RSS (VmHWM).
  gemm   --m --k --n       torch F.linear GFLOP/s at [m, k]·[n, k]ᵀ in float32 and bf16.
  sweep  --variants LIST   every variant in its own subprocess under a memory watchdog (killed above
                           --limit-gb resident, or when the machine's MemAvailable falls under
                           --reserve-gb): one JSON line per variant ("fit": false for those killed),
                           then {"summary": ...} with the fastest f32 and the fastest bf16 variant.
  watch  --report R -- CMD run any command under the same watchdog; R gets {"rc", "wall_s",
                           "peak_rss_bytes", "killed"} (peak from /proc/PID/status VmHWM, polled).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = ["f32", "bf16", "bf16f32w"]
BATCHINGS = ["padded", "mb4", "rows"]
ATTNS = ["eager", "sdpa"]


def vm(pid, key):
    """A /proc/PID/status field in bytes (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def watched(cmd, limit_gb, reserve_gb, timeout_s, stdout=None, stderr=None):
    """Runs cmd; kills it above limit_gb resident, below reserve_gb MemAvailable, or after timeout_s."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
    peak, killed = 0, None
    while True:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            peak = max(peak, ru.ru_maxrss * 1024)  # the child's own (forked from this small process)
            break
        hwm = vm(p.pid, "VmHWM")
        rss = vm(p.pid, "VmRSS") or 0
        peak = max(peak, hwm or 0)
        reason = None
        if rss > limit_gb * 1e9:
            reason = f"resident {rss / 1e9:.1f} GB > limit {limit_gb} GB"
        elif mem_available() < reserve_gb * 1e9:
            reason = f"machine MemAvailable under {reserve_gb} GB at {rss / 1e9:.1f} GB resident"
        elif timeout_s and time.perf_counter() - t0 > timeout_s:
            reason = f"timeout {timeout_s} s"
        if reason:
            killed = reason
            os.kill(p.pid, signal.SIGKILL)
            _, status, ru = os.wait4(p.pid, 0)
            peak = max(peak, ru.ru_maxrss * 1024)
            break
        time.sleep(0.1)
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "wall_s": time.perf_counter() - t0, "peak_rss_bytes": peak, "killed": killed}


def common(ap):
    ap.add_argument("--base", required=True)
    ap.add_argument("--aligned", required=True, help="the PEFT LoRA adapter directory")
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=2, help="timed steps after one warm-up step (best reported)")
    ap.add_argument("--forward-repeats", type=int, default=1, help="timed no_grad forwards (0: none)")
    ap.add_argument("--s-init", type=float, default=3.0)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.05)


def cmd_step(a):
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, HERE)
    from ila_torch import LoraMaskedModel, batch_tensors, rows_from_jsonl

    precision, batching, attn = a.variant.split("/")
    torch.set_num_threads(a.threads)
    t_load = time.perf_counter()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.base, dtype=dtype, attn_implementation=attn)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mm = LoraMaskedModel(model, a.aligned)
    load_s = time.perf_counter() - t_load
    causal = mm.model.base_model.model  # LlamaForCausalLM with PEFT's LoRA layers injected
    inner, lm_head = causal.model, causal.lm_head
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision != "f32" else contextlib.nullcontext

    rows = rows_from_jsonl(a.base, a.data, a.rows, a.seq_len)
    tokens = sum(len(i) for i, _ in rows)
    if batching == "rows":
        groups = [[r] for r in rows]
    elif batching == "mb4":
        order = sorted(rows, key=lambda r: len(r[0]))
        groups = [order[i:i + 4] for i in range(0, len(order), 4)]
    else:
        groups = [rows]
    chunks = []
    for g in groups:
        ids, mask, lab = batch_tensors(g)
        sel = lab[:, 1:] != -100  # position t predicts t + 1
        chunks.append((ids, mask if len(g) > 1 else None, sel, lab[:, 1:][sel]))
    count = sum(int(c[2].sum()) for c in chunks)
    padded_tokens = sum(c[0].numel() for c in chunks)

    def chunk_nll_sum(s, ids, mask, sel, target):
        mm._prepare(torch.sigmoid(s))
        with autocast():
            h = inner(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = lm_head(h[:, :-1][sel])
        return torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")

    s = torch.full((len(mm.names),), a.s_init, requires_grad=True)
    opt = torch.optim.Adam([s], lr=a.lr, betas=(0.9, 0.999), eps=1e-8)

    class GiveUp(Exception):
        pass

    def step(give_up=None):
        opt.zero_grad()
        total, t0, done_tokens = 0.0, time.perf_counter(), 0
        for k, c in enumerate(chunks):
            part = chunk_nll_sum(s, *c) / count
            part.backward()
            total += part.item()
            el = time.perf_counter() - t0
            done_tokens += int(c[0].numel())
            projected = el * padded_tokens / done_tokens  # the step's time at this pace
            if give_up and k + 1 < len(chunks) and (el > give_up or (done_tokens >= padded_tokens / 4
                                                                     and projected > 1.1 * give_up)):
                raise GiveUp(f"{el:.1f} s after {k + 1} of {len(chunks)} chunks (projected {projected:.0f} s), "
                             f"> {give_up:.1f} s")
        (a.lam * torch.sigmoid(s).mean()).backward()
        g = s.grad.clone()
        opt.step()
        return total, g

    t = time.perf_counter()
    try:
        nll, grad = step(a.give_up)  # warm-up, at s = s_init
    except GiveUp as e:
        print(json.dumps({"variant": a.variant, "precision": precision, "batching": batching, "attn": attn,
                          "gave_up": f"warm-up step slower than the best so far: {e}", "load_s": load_s,
                          "peak_rss_bytes": vm("self", "VmHWM")}))
        return
    warm = time.perf_counter() - t
    best = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    fwd = None
    if a.forward_repeats > 0:
        s0 = torch.full((len(mm.names),), a.s_init)
        fwd = float("inf")
        for _ in range(a.forward_repeats):
            t = time.perf_counter()
            with torch.no_grad():
                for c in chunks:
                    chunk_nll_sum(s0, *c)
            fwd = min(fwd, time.perf_counter() - t)
    print(json.dumps({
        "variant": a.variant, "precision": precision, "batching": batching, "attn": attn,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "layers": len(mm.names),
        "rows": len(rows), "tokens": tokens, "loss_tokens": count, "padded_tokens": padded_tokens,
        "load_s": load_s, "warmup_s": warm, "step_s": best if a.repeats else warm, "tok_s": tokens / (best if a.repeats else warm),
        "forward_s": fwd, "forward_tok_s": tokens / fwd if fwd else None,
        "nll": nll, "grad": grad.tolist(), "peak_rss_bytes": vm("self", "VmHWM")}))


def cmd_gemm(a):
    import torch
    torch.set_num_threads(a.threads)
    out = {"m": a.m, "k": a.k, "n": a.n, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
        x = torch.randn(a.m, a.k).to(dt)
        w = torch.randn(a.n, a.k).to(dt)
        torch.nn.functional.linear(x, w)
        best = float("inf")
        for _ in range(a.repeats):
            t = time.perf_counter()
            torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - t)
        out[f"{name}_gflops"] = 2.0 * a.m * a.k * a.n / best / 1e9
    print(json.dumps(out))


def cmd_sweep(a):
    variants = a.variants.split(",") if a.variants else [f"{p}/{b}/{t}" for p in PRECISIONS for b in BATCHINGS for t in ATTNS]
    results = []
    for v in variants:
        if len(v.split("/")) != 3 or v.split("/")[0] not in PRECISIONS or v.split("/")[1] not in BATCHINGS \
                or v.split("/")[2] not in ATTNS:
            sys.exit(f"unknown variant {v} (precision/batching/attn from {PRECISIONS} {BATCHINGS} {ATTNS})")
        cmd = [sys.executable, os.path.abspath(__file__), "step", "--variant", v, "--base", a.base, "--aligned", a.aligned,
               "--data", a.data, "--rows", str(a.rows), "--seq-len", str(a.seq_len), "--threads", str(a.threads),
               "--repeats", str(a.repeats), "--forward-repeats", str(a.forward_repeats), "--s-init", str(a.s_init),
               "--lam", str(a.lam), "--lr", str(a.lr)]
        done_ok = [r["step_s"] for r in results if r["fit"]]
        if a.give_up_factor and done_ok:
            cmd += ["--give-up", str(a.give_up_factor * min(done_ok))]
        print(f"scale_torch: {v} ...", file=sys.stderr, flush=True)
        out_path = os.path.join(a.workdir, v.replace("/", "_") + ".json")
        err_path = out_path[:-5] + ".err"
        res_path = out_path[:-5] + ".result.json"
        if a.keep and os.path.exists(res_path):
            r = json.load(open(res_path))
            if r.get("status") in ("ok", "did not fit", "slower, abandoned"):
                print(f"scale_torch: {v}: kept from an earlier sweep ({r['status']})", file=sys.stderr, flush=True)
                results.append(r)
                continue
        with open(out_path, "w") as fo, open(err_path, "w") as fe:
            w = watched(cmd, a.limit_gb, a.reserve_gb, a.timeout, stdout=fo, stderr=fe)
        r = {"variant": v, "fit": False, "watch": w}
        try:
            r.update(json.load(open(out_path)))
            r["fit"] = w["rc"] == 0 and w["killed"] is None and "gave_up" not in r
            if "gave_up" in r:
                r["why"] = r["gave_up"]
        except Exception:
            tail = open(err_path).read().strip().splitlines()[-3:]
            r["why"] = w["killed"] or f"exit {w['rc']}: " + " | ".join(tail)
        k = w["killed"] or ""
        r["status"] = ("ok" if r["fit"] else "slower, abandoned" if "gave_up" in r else
                       "did not fit" if ("resident" in k or "MemAvailable" in k) else "timeout" if k else "failed")
        results.append(r)
        json.dump(r, open(res_path, "w"))
        print(json.dumps({k: x for k, x in r.items() if k != "grad"}), flush=True)
        print(f"scale_torch: {v}: " + (f"step {r['step_s']:.3f} s, peak {r['peak_rss_bytes'] / 1e9:.2f} GB" if r["fit"]
                                        else f"{r['status']}: {r.get('why')}"), file=sys.stderr, flush=True)
    # Agreement with the f32 reference (the first f32 variant that ran): NLL and dJ/ds.
    ref = next((r for r in results if r["fit"] and r["precision"] == "f32"), None)
    for r in results:
        if r["fit"] and ref:
            r["nll_rel_diff"] = abs(r["nll"] - ref["nll"]) / abs(ref["nll"])
            gmax = max(abs(x) for x in ref["grad"]) or 1e-30
            r["grad_rel_diff"] = max(abs(x - y) for x, y in zip(r["grad"], ref["grad"])) / gmax
            if r["precision"] == "f32":
                r["correct"] = r["nll_rel_diff"] <= 1e-5 and r["grad_rel_diff"] <= 1e-3
            else:  # bf16 arithmetic: agreement reported, not required to be float32-exact
                r["correct"] = r["nll_rel_diff"] <= 2e-2
    summary = {"ref": ref["variant"] if ref else None, "variants": []}
    for r in results:
        summary["variants"].append({k: r.get(k) for k in ["variant", "status", "fit", "why", "step_s", "tok_s", "forward_s",
                                                          "forward_tok_s", "peak_rss_bytes", "nll", "nll_rel_diff",
                                                          "grad_rel_diff", "correct", "load_s", "tokens"]})
        if not r["fit"]:
            summary["variants"][-1]["peak_rss_bytes"] = max(r["watch"]["peak_rss_bytes"], r.get("peak_rss_bytes") or 0)
            summary["variants"][-1]["step_s"] = None
    for prec, key in [("f32", "best_f32"), ("bf16", "best_bf16")]:
        ok = [r for r in results if r["fit"] and r.get("correct", True) and
              (r["precision"] == "f32" if prec == "f32" else r["precision"] != "f32")]
        summary[key] = min(ok, key=lambda r: r["step_s"])["variant"] if ok else None
    ok = [r for r in results if r["fit"] and r.get("correct", True)]
    summary["best"] = min(ok, key=lambda r: r["step_s"])["variant"] if ok else None
    print(json.dumps({"summary": summary}))


def cmd_watch(a):
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    w = watched(cmd, a.limit_gb, a.reserve_gb, a.timeout)
    with open(a.report, "w") as f:
        json.dump(w, f)
    if w["killed"]:
        print(f"scale_torch watch: killed {cmd[0]}: {w['killed']}", file=sys.stderr)
    sys.exit(w["rc"] if w["rc"] >= 0 else 128 - w["rc"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd_name", required=True)
    p = sub.add_parser("step")
    common(p)
    p.add_argument("--variant", required=True, help="precision/batching/attn, e.g. f32/rows/sdpa")
    p.add_argument("--give-up", type=float, default=None,
                   help="abandon the warm-up step once it has taken this many seconds (it cannot be the fastest)")
    p.set_defaults(fn=cmd_step)
    p = sub.add_parser("gemm")
    p.add_argument("--m", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(fn=cmd_gemm)
    p = sub.add_parser("sweep")
    common(p)
    p.add_argument("--variants", default=None, help="comma-separated; default every precision × batching × attn")
    p.add_argument("--workdir", required=True, help="where each variant's JSON and stderr go")
    p.add_argument("--limit-gb", type=float, default=20.0)
    p.add_argument("--reserve-gb", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=0, help="seconds per variant (0: none)")
    p.add_argument("--keep", action="store_true", help="reuse the results of variants an earlier sweep in --workdir finished")
    p.add_argument("--give-up-factor", type=float, default=1.25,
                   help="abandon a variant whose warm-up step exceeds this × the fastest step so far (0: never)")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("watch")
    p.add_argument("--report", required=True)
    p.add_argument("--limit-gb", type=float, default=20.0)
    p.add_argument("--reserve-gb", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_watch)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
