#!/usr/bin/env python3
"""Python baseline for `ila-diff`: the same diff with safetensors + numpy + h5py.

    diff_baseline.py BASE ALIGNED -o deltas.h5 [--dtype f32|f16] [--compression N]

BASE: model directory (model.safetensors or sharded with model.safetensors.index.json) or one
.safetensors file. ALIGNED: the same, or a PEFT LoRA adapter directory. Writes the layout of
DESIGN.md section 4 with the same storage settings as ila-diff (chunks of ~1 MiB row blocks,
shuffle + gzip at --compression N, default 1 like ila-diff's; 0 = contiguous without filters, as
ila-diff writes it), to a temporary name renamed when complete. h5py compresses with zlib, one
chunk at a time, on one thread: what a careful user of safetensors + numpy + h5py gets.

numpy has no bfloat16, so bf16 tensors are widened by bit shifting (exact); safetensors' own
header parser (safe_open) lists tensors and loads F32/F16 ones.
"""
import os

# One BLAS thread: the only BLAS call here is a dot product per norm, and idle OpenBLAS workers
# spinning on a busy 2-core machine more than doubled this script's time. Pinning is the kinder
# choice for the baseline.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import re
import struct
import sys

import h5py
import numpy as np
from safetensors import safe_open

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LAYER_RE = re.compile(r"(?:^|.*\.)layers\.(\d+)\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


class SafetensorsFile:
    """Header via safetensors.safe_open; data through one np.memmap (bf16 widened by shifting)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        self.header = header
        self.start = 8 + n
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")
        with safe_open(path, framework="np") as f:  # validates the file as safetensors does
            assert set(f.keys()) == set(header)

    def names(self):
        return list(self.header)

    def shape(self, name):
        return self.header[name]["shape"]

    def floats(self, name):
        e = self.header[name]
        b, t = e["data_offsets"]
        raw = self.mm[self.start + b:self.start + t]
        dt = e["dtype"]
        if dt == "F32":
            x = raw.view("<f4")
        elif dt == "F16":
            x = raw.view("<f2").astype(np.float32)
        elif dt == "BF16":
            x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"error: {self.path}: tensor {name} has dtype {dt}")
        return x.reshape(e["shape"])


class Model:
    def __init__(self, path):
        self.path = path
        self.loc = {}
        if os.path.isdir(path):
            index = os.path.join(path, "model.safetensors.index.json")
            if os.path.exists(index):
                with open(index) as f:
                    wm = json.load(f)["weight_map"]
                files = {s: SafetensorsFile(os.path.join(path, s)) for s in sorted(set(wm.values()))}
                self.loc = {k: files[s] for k, s in wm.items()}
            else:
                sf = SafetensorsFile(os.path.join(path, "model.safetensors"))
                self.loc = {k: sf for k in sf.names()}
        else:
            sf = SafetensorsFile(path)
            self.loc = {k: sf for k in sf.names()}

    def linear_layers(self):
        out = []
        for k, f in self.loc.items():
            if k.endswith(".weight") and len(f.shape(k)) == 2:
                m = LAYER_RE.match(k[:-7])
                if m:
                    out.append((int(m.group(1)), KINDS.index(m.group(2)), k[:-7]))
        return [name for _, _, name in sorted(out)]

    def floats(self, name):
        return self.loc[name].floats(name)


def pattern_key(keys, module):
    if module in keys:
        return module
    for k in keys:
        if re.match(rf"(.*\.)?({k})$", module):
            return k
    return None


def chunks(shape, itemsize):
    budget = max(1, (1 << 20) // itemsize)
    chunk = [1] * len(shape)
    for axis in range(len(shape) - 1, -1, -1):
        take = max(1, min(shape[axis], budget))
        chunk[axis] = take
        budget = max(1, budget // take)
        if take < shape[axis]:
            break
    return tuple(chunk)


LEVEL = 1


def dataset(g, name, values, dtype=np.float32):
    values = np.ascontiguousarray(values, dtype=dtype)
    if LEVEL == 0:
        g.create_dataset(name, data=values)
        return
    g.create_dataset(name, data=values, chunks=chunks(values.shape, values.itemsize),
                     compression="gzip", compression_opts=LEVEL, shuffle=True)


def norm(x):
    x = x.astype(np.float64).ravel()
    return math.sqrt(float(np.dot(x, x)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("aligned")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    ap.add_argument("--compression", type=int, choices=range(10), default=1, metavar="0-9")
    args = ap.parse_args()
    global LEVEL
    LEVEL = args.compression

    base = Model(args.base)
    lora = os.path.exists(os.path.join(args.aligned, "adapter_config.json"))
    out_dir = os.path.dirname(os.path.abspath(args.output))
    tmp = os.path.join(out_dir, "." + os.path.basename(args.output) + f".tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = "ila-deltas"
            h5.attrs["version"] = 1
            h5.attrs["kind"] = "lora" if lora else "full"
            h5.attrs["base"] = args.base
            h5.attrs["aligned"] = args.aligned
            h5.attrs["tool"] = "diff_baseline.py"
            layers_group = h5.create_group("layers")
            if lora:
                with open(os.path.join(args.aligned, "adapter_config.json")) as f:
                    cfg = json.load(f)
                ad = SafetensorsFile(os.path.join(args.aligned, "adapter_model.safetensors"))
                rp, alp = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
                modules = sorted({n.split(".lora_")[0] for n in ad.names()})
                layers = []
                for m in modules:
                    name = m[len("base_model.model."):] if m.startswith("base_model.model.") else m
                    layers.append((name, m))
                order = {n: i for i, n in enumerate(base.linear_layers())}
                layers.sort(key=lambda t: order[t[0]])
                for name, m in layers:
                    a = ad.floats(m + ".lora_A.weight")
                    b = ad.floats(m + ".lora_B.weight")
                    if cfg.get("fan_in_fan_out"):
                        a, b = a.T, b.T
                    k = pattern_key(list(rp), name)
                    r = rp[k] if k else cfg["r"]
                    k = pattern_key(list(alp), name)
                    alpha = alp[k] if k else cfg["lora_alpha"]
                    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
                    scale = float(np.float32(scale))
                    w0 = base.floats(name + ".weight")
                    # ‖s·BA‖F via the r×r Gram matrices
                    a64, b64 = a.astype(np.float64), b.astype(np.float64)
                    nd = abs(scale) * math.sqrt(max(0.0, float(np.sum((b64.T @ b64) * (a64 @ a64.T)))))
                    nb = norm(w0)
                    g = layers_group.create_group(name)
                    write_attrs(g, name, w0.shape, nd, nb)
                    g.attrs["scale"] = scale
                    dataset(g, "lora_A", a)
                    dataset(g, "lora_B", b)
            else:
                al = Model(args.aligned)
                for name in base.linear_layers():
                    w0 = base.floats(name + ".weight")
                    d = al.floats(name + ".weight") - w0
                    nd, nb = norm(d), norm(w0)
                    if not math.isfinite(nd):
                        raise SystemExit(f"error: {args.aligned}: layer {name}: delta contains NaN or Inf")
                    g = layers_group.create_group(name)
                    write_attrs(g, name, w0.shape, nd, nb)
                    dataset(g, "delta", d, np.float16 if args.dtype == "f16" else np.float32)
        os.replace(tmp, args.output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_attrs(g, name, shape, nd, nb):
    m = LAYER_RE.match(name)
    g.attrs["block"] = int(m.group(1))
    g.attrs["kind"] = m.group(2)
    g.attrs["shape"] = np.array(shape, dtype=np.int64)
    g.attrs["norm_delta"] = nd
    g.attrs["norm_base"] = nb
    g.attrs["rel_change"] = nd / nb if nb > 0 else 0.0


if __name__ == "__main__":
    main()
