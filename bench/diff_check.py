#!/usr/bin/env python3
"""Checks ila-diff against NumPy on the small test bed.

Runs ila-diff on ../shared/testbed/small base-A against lora-pyapi, lora-define-{001,025,050,075,100}
and full-pyapi, then compares every stored tensor and attribute with values NumPy computes from
the same safetensors files:
  full:  delta == aligned - base in float32, bit for bit (bf16 widened exactly by shifting);
         --dtype f16: delta == (aligned - base).astype(float16); --rank R: the reconstruction error
         against NumPy's SVD.
  lora:  lora_A / lora_B == the adapter's tensors bit for bit; scale == lora_alpha / r;
         norm_delta == ||scale * B @ A||_F (float64).
  both:  norm_base == ||W0||_F, rel_change, block/kind/shape attributes, root attributes, the
         layer set (all 7 kinds of every block), and h5py readability.

    bench/diff_check.py [--bin PATH] [--testbed DIR]
Exit 0 when everything matches.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NORM_RTOL = 1e-9


def read_safetensors(path):
    """name -> float32 array, decoding BF16/F16/F32 by hand."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = np.frombuffer(blob, dtype=np.uint8, offset=8 + n)
    out = {}
    for name, e in header.items():
        b, t = e["data_offsets"]
        raw = data[b:t]
        if e["dtype"] == "BF16":
            x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "F16":
            x = raw.view("<f2").astype(np.float32)
        elif e["dtype"] == "F32":
            x = raw.view("<f4").copy()
        else:
            continue
        out[name] = x.reshape(e["shape"])
    return out


def norm64(x):
    x = np.asarray(x, dtype=np.float64).ravel()
    return math.sqrt(float(np.dot(x, x)))


def close(a, b, rtol=NORM_RTOL):
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


class Check:
    def __init__(self, label):
        self.label = label
        self.failures = []
        self.tensors = 0
        self.values = 0
        self.max_norm_rel = 0.0

    def fail(self, msg):
        if len(self.failures) < 20:
            print(f"  FAIL {self.label}: {msg}")
        self.failures.append(msg)

    def norm(self, what, got, want):
        rel = abs(got - want) / max(abs(want), 1e-300)
        self.max_norm_rel = max(self.max_norm_rel, rel)
        if not close(got, want):
            self.fail(f"{what}: {got!r} vs numpy {want!r}")


def expected_layers(n_blocks):
    return [f"model.layers.{b}.{'self_attn' if k in KINDS[:4] else 'mlp'}.{k}" for b in range(n_blocks) for k in KINDS]


def common(chk, h5, base, kind, base_path, aligned_path):
    a = h5.attrs
    for key, want in [("format", "ila-deltas"), ("version", 1), ("kind", kind),
                      ("base", base_path), ("aligned", aligned_path)]:
        got = a.get(key)
        got = got.decode() if isinstance(got, bytes) else got
        if got != want:
            chk.fail(f"root attribute {key} = {got!r}, want {want!r}")
    n_blocks = 1 + max(int(k.split(".")[2]) for k in base if k.startswith("model.layers."))
    want = expected_layers(n_blocks)
    got = list(h5["layers"].keys())
    if sorted(got) != sorted(want):
        chk.fail(f"layers {sorted(set(got) ^ set(want))} differ")
    for name in want:
        if name not in h5["layers"]:
            continue
        g = h5["layers"][name]
        w0 = base[name + ".weight"]
        if int(g.attrs["block"]) != int(name.split(".")[2]):
            chk.fail(f"{name}: block {g.attrs['block']}")
        k = g.attrs["kind"]
        k = k.decode() if isinstance(k, bytes) else k
        if k != name.split(".")[-1]:
            chk.fail(f"{name}: kind {k}")
        if list(g.attrs["shape"]) != list(w0.shape):
            chk.fail(f"{name}: shape {list(g.attrs['shape'])} vs {list(w0.shape)}")
        chk.norm(f"{name} norm_base", float(g.attrs["norm_base"]), norm64(w0))
        rel = float(g.attrs["norm_delta"]) / float(g.attrs["norm_base"])
        if not close(float(g.attrs["rel_change"]), rel, 1e-12):
            chk.fail(f"{name}: rel_change {g.attrs['rel_change']} vs {rel}")
    return want


def check_full(chk, h5, base, aligned, f16=False):
    for name in common(chk, h5, base, "full", chk.base_path, chk.aligned_path):
        g = h5["layers"][name]
        want = aligned[name + ".weight"] - base[name + ".weight"]  # float32 arithmetic
        got = g["delta"][...]
        chk.tensors += 1
        chk.values += got.size
        if f16:
            if got.dtype != np.float16:
                chk.fail(f"{name}: dtype {got.dtype}, want float16")
            if not np.array_equal(got.view(np.uint16), want.astype(np.float16).view(np.uint16)):
                chk.fail(f"{name}: float16 delta differs in {int(np.sum(got != want.astype(np.float16)))} values")
        else:
            if got.dtype != np.float32:
                chk.fail(f"{name}: dtype {got.dtype}, want float32")
            if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                chk.fail(f"{name}: delta differs in {int(np.sum(got != want))} values (max {np.max(np.abs(got - want))})")
        chk.norm(f"{name} norm_delta", float(g.attrs["norm_delta"]), norm64(want))


def check_rank(chk, h5, base, aligned, rank):
    worst = 0.0
    for name in common(chk, h5, base, "full", chk.base_path, chk.aligned_path):
        g = h5["layers"][name]
        d = (aligned[name + ".weight"] - base[name + ".weight"]).astype(np.float64)
        s = np.linalg.svd(d, compute_uv=False)
        want = math.sqrt(float(np.sum(s[rank:] ** 2))) / math.sqrt(float(np.sum(s ** 2)))
        got = float(g.attrs["reconstruction_error"])
        A, B = g["lora_A"][...], g["lora_B"][...]
        recon = float(g.attrs["scale"]) * (B.astype(np.float64) @ A.astype(np.float64))
        actual = norm64(d - recon) / norm64(d)
        chk.tensors += 2
        chk.values += A.size + B.size
        worst = max(worst, abs(got - want))
        if A.shape != (rank, d.shape[1]) or B.shape != (d.shape[0], rank):
            chk.fail(f"{name}: factor shapes {A.shape} {B.shape}")
        if abs(got - want) > 1e-4 or abs(actual - got) > 1e-5:
            chk.fail(f"{name}: reconstruction_error {got} vs numpy SVD {want} (factors give {actual})")
        chk.norm(f"{name} norm_delta", float(g.attrs["norm_delta"]), norm64(d))
    chk.svd_err = worst


def check_lora(chk, h5, base, adapter_dir):
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    ad = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert not cfg.get("rank_pattern") and not cfg.get("alpha_pattern") and not cfg.get("use_rslora")
    scale = cfg["lora_alpha"] / cfg["r"]
    for name in common(chk, h5, base, "lora", chk.base_path, chk.aligned_path):
        g = h5["layers"][name]
        A = ad[f"base_model.model.{name}.lora_A.weight"]
        B = ad[f"base_model.model.{name}.lora_B.weight"]
        gA, gB = g["lora_A"][...], g["lora_B"][...]
        chk.tensors += 2
        chk.values += gA.size + gB.size
        if gA.dtype != np.float32 or not np.array_equal(gA.view(np.uint32), A.view(np.uint32)):
            chk.fail(f"{name}: lora_A differs")
        if gB.dtype != np.float32 or not np.array_equal(gB.view(np.uint32), B.view(np.uint32)):
            chk.fail(f"{name}: lora_B differs")
        if float(g.attrs["scale"]) != scale:
            chk.fail(f"{name}: scale {g.attrs['scale']} vs {scale}")
        delta = scale * (B.astype(np.float64) @ A.astype(np.float64))
        chk.norm(f"{name} norm_delta", float(g.attrs["norm_delta"]), norm64(delta))
        if "delta" in g:
            chk.fail(f"{name}: LoRA layer also stores a dense delta")


def find_binary(arg):
    if arg:
        return arg
    for c in ["release", "debug"]:
        p = os.path.join(REPO, ".build", c, "ila-diff")
        if os.access(p, os.X_OK):
            return p
    sys.exit("error: ila-diff not built; run `swift build -c release --product ila-diff`")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="ila-diff binary (default: .build/release, else .build/debug)")
    ap.add_argument("--testbed", default=os.path.join(os.path.dirname(REPO), "shared", "testbed", "small"))
    args = ap.parse_args()
    exe = find_binary(args.bin)
    tb = args.testbed
    if not os.path.exists(os.path.join(tb, "base-A", "model.safetensors")):
        sys.exit(f"error: test bed not found at {tb}")
    base_dir = os.path.join(tb, "base-A")
    base = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    print(f"ila-diff: {exe}\ntest bed: {tb}\n")

    runs = [("lora-pyapi", [], "lora"), *[(f"lora-define-{p}", [], "lora") for p in ["001", "025", "050", "075", "100"]],
            ("full-pyapi", [], "full"), ("full-pyapi", ["--dtype", "f16"], "f16"), ("full-pyapi", ["--rank", "8"], "rank")]
    rows, failed = [], 0
    full_cache = None
    with tempfile.TemporaryDirectory() as tmp:
        for aligned_name, extra, mode in runs:
            aligned_dir = os.path.join(tb, aligned_name)
            label = " ".join([aligned_name] + extra)
            out = os.path.join(tmp, f"{aligned_name}-{mode}.h5")
            p = subprocess.run([exe, base_dir, aligned_dir, "-o", out, "--json"] + extra, capture_output=True, text=True)
            chk = Check(label)
            chk.base_path, chk.aligned_path = base_dir, aligned_dir
            if p.returncode != 0:
                chk.fail(f"exit {p.returncode}: {p.stderr.strip()}")
            else:
                report = json.loads(p.stdout)
                with h5py.File(out, "r") as h5:
                    if mode == "lora":
                        check_lora(chk, h5, base, aligned_dir)
                    else:
                        if full_cache is None:
                            full_cache = read_safetensors(os.path.join(aligned_dir, "model.safetensors"))
                        if mode == "rank":
                            check_rank(chk, h5, base, full_cache, 8)
                        else:
                            check_full(chk, h5, base, full_cache, f16=(mode == "f16"))
                    # --json agrees with the file
                    if report.get("kind") != ("lora" if mode == "lora" else "full"):
                        chk.fail(f"--json kind {report.get('kind')}")
                    for l in report.get("layers", []):
                        g = h5["layers"][l["name"]]
                        for key in ["norm_delta", "norm_base", "rel_change"]:
                            if not close(float(l[key]), float(g.attrs[key]), 1e-15):
                                chk.fail(f"--json {l['name']} {key} {l[key]} vs file {g.attrs[key]}")
                        if l["shape"] != list(g.attrs["shape"]) or l["block"] != int(g.attrs["block"]):
                            chk.fail(f"--json {l['name']} shape/block")
                    if len(report.get("layers", [])) != len(h5["layers"]):
                        chk.fail("--json layer count differs from the file")
            failed += bool(chk.failures)
            note = {"lora": "A, B bit-exact", "full": "delta bit-exact", "f16": "f16 delta bit-exact",
                    "rank": f"svd err within {getattr(chk, 'svd_err', 0):.1e}"}[mode]
            rows.append((label, "OK" if not chk.failures else f"FAIL ({len(chk.failures)})", chk.tensors, chk.values,
                         f"{chk.max_norm_rel:.1e}", note))

    w = [max(len(str(r[i])) for r in rows + [("run", "result", "tensors", "values", "max norm rel err", "")]) for i in range(6)]
    hdr = ("run", "result", "tensors", "values", "max norm rel err", "checked")
    print("  ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr)))
    print("  ".join("-" * w[i] for i in range(6)))
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    print(f"\n{len(rows) - failed}/{len(rows)} runs match NumPy")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
