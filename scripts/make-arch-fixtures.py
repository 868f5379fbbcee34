#!/usr/bin/env python3
"""Generate the multi-architecture PyTorch oracle fixtures in fixtures/arch/.

For every case (one architecture family or one RoPE variant) this writes

    fixtures/arch/<case>/base/        config.json + model.safetensors (bf16, save_pretrained) + tokenizer
    fixtures/arch/<case>/lora/        PEFT LoRA adapter (r=4, alpha=8, every linear kind, float32)
    fixtures/arch/<case>/full/        aligned full checkpoint = base + noise on every block linear weight
                                      (family cases only)
    fixtures/arch/<case>/rows.jsonl   8 pre-tokenized rows
    fixtures/arch/<case>/reference.json  oracle values (see fixtures/arch/README.md)

and fixtures/arch/README.md.  Every number in reference.json is computed in float32 on the CPU from the
SAVED files (transformers eager attention), the ILA mask applied as W0 + sigma(s)*Delta through
torch.func.functional_call, gradients by autograd.  The script asserts its own cross-checks (PEFT's
own LoRA forward, the saved aligned model, float64 finite differences, the legacy rope_scaling layout)
and that every architecture feature a case exercises moves the loss; it exits non-zero otherwise.

Usage:  python3 scripts/make-arch-fixtures.py [--out fixtures/arch] [--only CASE ...]
Needs:  pip install torch transformers peft safetensors     (no network access to the Hub is used)
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import zlib

# PEFT stores target_modules as a Python set; fix the hash seed so adapter_config.json is byte-stable.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

transformers.logging.set_verbosity_error()
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_SRC = os.path.join(REPO, "fixtures", "tiny", "base-A")

VOCAB = 512
BOS, EOS, PAD = 1, 2, 0
LENGTHS = [64, 23, 41, 20, 57, 33, 48, 28]  # row lengths (input_ids incl. BOS and final EOS)
GRAD_ROWS = 4
S_INIT = 3.0
LAMBDA = 1.0
LORA_R, LORA_ALPHA = 4, 8
FEATURE_MIN_DIFF = 1e-3
PEFT_TOL = 1e-5

# weight scales (larger than the usual 0.02 so that every feature visibly moves the loss)
LIN_GAIN = 1.0  # linear weights ~ N(0, (LIN_GAIN / sqrt(in_features))^2): 0.18 for in=32, 0.125 for in=64
BIAS_STD = 0.3
EMB_STD = 0.3
HEAD_STD = 0.3  # untied lm_head
NORM_LLAMA = (0.6, 1.4)  # w ~ U(a, b), output x_hat * w
NORM_GEMMA = (-0.4, 0.4)  # w ~ U(a, b), output x_hat * (1 + w)
LORA_A_STD = 0.25
LORA_B_STD = 0.25
FULL_NOISE_REL = 0.7  # full: W_aligned = W_base + N(0, (0.7 * std(W_base))^2)

LLAMA_KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI3_KINDS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
KIND_PARENT = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "qkv_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "gate_up_proj": "mlp",
}

COMMON = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
    bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
)

PER_ROW_NOTE = (
    "Per-row semantics: every row is its own forward pass (batch 1, no padding, no attention_mask, "
    "position_ids 0..L-1, use_cache=False) over ALL L tokens of input_ids (the final EOS included, although "
    "its logits are unused), so a sequence-length-dependent RoPE sees seq_len = L = len(input_ids). The "
    "rotary module's cached state (inv_freq / max_seq_len_cached, per layer type) is reset to its "
    "post-__init__ value before every row, so each row's result depends only on that row. Sums of token "
    "NLLs are pooled over rows (token-weighted mean)."
)


# ----------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------

def llama_cfg(rope, **kw):
    d = dict(COMMON, num_hidden_layers=2, head_dim=8, tie_word_embeddings=True, rms_norm_eps=1e-5,
             max_position_embeddings=256, rope_parameters=rope)
    d.update(kw)
    return LlamaConfig(**d)


def set_rope(fn):
    """config mutator: replace the (flat) rope_parameters by fn(old)"""
    def mut(cfg):
        cfg.rope_parameters = fn(copy.deepcopy(cfg.rope_parameters))
    return mut


def rope_default(rp):
    return {"rope_type": "default", "rope_theta": rp["rope_theta"]}


def rope_set(**kv):
    def f(rp):
        rp.update(kv)
        return rp
    return f


def rope_del(*keys):
    def f(rp):
        for k in keys:
            rp.pop(k, None)
        return rp
    return f


def set_attr(name, value):
    def mut(cfg):
        setattr(cfg, name, value)
    return mut


def mutate_norms(kind):
    """model mutator over every RMSNorm: 'unit' (Llama-type w=1 / Gemma-type w=0: multiplier 1),
    'minus_one' (Gemma-type w -> w-1: transformers then computes x_hat*w, i.e. a norm WITHOUT the +1)"""
    def mut(model):
        for mod in model.modules():
            if "RMSNorm" not in type(mod).__name__:
                continue
            gemma = "Gemma" in type(mod).__name__
            if kind == "unit":
                mod.weight.fill_(0.0 if gemma else 1.0)
            elif kind == "minus_one":
                mod.weight.sub_(1.0)
    return mut


def mutate_qk_norm_unit(model):
    for name, mod in model.named_modules():
        if name.endswith("q_norm") or name.endswith("k_norm"):
            gemma = "Gemma" in type(mod).__name__
            mod.weight.fill_(0.0 if gemma else 1.0)


def mutate_zero_qkv_bias(model):
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.bias is not None:
            mod.bias.zero_()


def mutate_no_embed_scale(model):
    model.model.embed_tokens.embed_scale.fill_(1.0)


def phi3_short_factor(n):
    # Phi-3.5 style: short factors close to 1, long factors growing with the pair index
    return [round(1.0 + 0.05 * i + 0.02 * (i % 2), 4) for i in range(n)]


def phi3_long_factor(n):
    return [round(1.0 * (12.0 ** (i / max(1, n - 1))), 4) for i in range(n)]


CASES = []


def case(**kw):
    CASES.append(kw)


# ---- families -------------------------------------------------------------------------------------------
case(
    name="llama", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg(
        {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": 48},
        head_dim=16, max_position_embeddings=1536),
    highlights="Llama-3.2 style: tie_word_embeddings, head_dim 16 (hidden 32 / 4 heads = 8), GQA 4/2, rope_type "
               "llama3 (theta 5e5, factor 32, low 1, high 4, original_max_position_embeddings 48: pair 0 kept, "
               "pair 1 in the smoothed band, pairs 2-7 divided by 32), rms_norm_eps 1e-5",
    features={
        "rope_llama3": dict(cfg=set_rope(rope_default)),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="mistral", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: MistralConfig(**dict(
        COMMON, num_hidden_layers=2, head_dim=16, sliding_window=8, tie_word_embeddings=False,
        max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    highlights="Mistral (Nemo-like explicit head_dim 16 != hidden/heads 8), sliding_window 8 on every layer "
               "(rows are 20..64 tokens), untied lm_head, rope_theta 1e6",
    features={
        "sliding_window": dict(cfg=set_attr("sliding_window", None)),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="qwen2", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: Qwen2Config(**dict(COMMON, num_hidden_layers=2, max_position_embeddings=256,
                                           tie_word_embeddings=True)),
    highlights="Qwen2 defaults otherwise (rope_theta 1e4, eps 1e-6, use_sliding_window false so sliding_window is "
               "null and all layer_types full_attention), q/k/v biases (always on in Qwen2, no config key), o_proj "
               "without bias; tie_word_embeddings true as Qwen2.5-0.5B/1.5B/3B (the Qwen2Config default is false; "
               "tied here to stay inside the size budget, untied heads are covered by mistral and rope-longrope)",
    features={
        "qkv_bias": dict(model=mutate_zero_qkv_bias),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="qwen3", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: Qwen3Config(**dict(
        COMMON, num_hidden_layers=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    highlights="Qwen3 dense: q_norm/k_norm (RMSNorm over head_dim, random non-unit weights) before RoPE, head_dim 16 "
               "!= hidden/heads 8, tied embeddings (as Qwen3-0.6B..4B), no biases, rope_theta 1e6",
    features={
        "qk_norm": dict(model=mutate_qk_norm_unit),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="gemma", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: GemmaConfig(**dict(
        COMMON, num_hidden_layers=2, head_dim=8, hidden_act="gelu_pytorch_tanh", max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    highlights="Gemma 1: RMSNorm x_hat*(1+w) (random w), embeddings * sqrt(32), gelu_pytorch_tanh MLP, tied lm_head, "
               "attention scale head_dim^-1/2",
    features={
        "norm_one_plus_w": dict(model=mutate_norms("minus_one")),
        "embed_scale": dict(model=mutate_no_embed_scale),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="gemma2", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: Gemma2Config(**dict(
        COMMON, num_hidden_layers=2, head_dim=8, query_pre_attn_scalar=16, sliding_window=8,
        attn_logit_softcapping=5.0, final_logit_softcapping=5.0, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    highlights="Gemma 2: 2 blocks, layer_types sliding/full (default alternation: even layers sliding), sliding_window 8, "
               "attn_logit_softcapping 5, final_logit_softcapping 5, query_pre_attn_scalar 16 != head_dim 8, "
               "post-attention and pre/post-feedforward norms, (1+w) norms, embeddings * sqrt(32), tied",
    features={
        "attn_logit_softcapping": dict(cfg=set_attr("attn_logit_softcapping", None)),
        "final_logit_softcapping": dict(cfg=set_attr("final_logit_softcapping", None)),
        "query_pre_attn_scalar": dict(cfg=set_attr("query_pre_attn_scalar", 8)),
        "sliding_window": dict(cfg=set_attr("sliding_window", 1 << 20)),
        "norm_one_plus_w": dict(model=mutate_norms("minus_one")),
        "embed_scale": dict(model=mutate_no_embed_scale),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)


def g3_set_local_theta(cfg):
    cfg.rope_parameters = copy.deepcopy(cfg.rope_parameters)
    cfg.rope_parameters["sliding_attention"]["rope_theta"] = cfg.rope_parameters["full_attention"]["rope_theta"]


def g3_global_default(cfg):
    cfg.rope_parameters = copy.deepcopy(cfg.rope_parameters)
    cfg.rope_parameters["full_attention"] = {
        "rope_type": "default", "rope_theta": cfg.rope_parameters["full_attention"]["rope_theta"]}


case(
    name="gemma3", family=True, kinds=LLAMA_KINDS,
    make_config=lambda: Gemma3TextConfig(**dict(
        COMMON, num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=4, sliding_window=12,
        sliding_window_pattern=3, max_position_embeddings=256,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        })),
    highlights="Gemma 3 text (Gemma3ForCausalLM, model_type gemma3_text): 3 blocks, sliding_window_pattern 3 -> "
               "layer_types sliding/sliding/full, sliding_window 12, q_norm/k_norm ((1+w) over head_dim, before "
               "RoPE), local layers rope_parameters.sliding_attention rope_theta 1e4 (old key rope_local_base_freq), "
               "global layers rope_parameters.full_attention rope_theta 1e6 with linear factor 8 (as 4B+), "
               "query_pre_attn_scalar 4 != head_dim 8, no soft-capping, tied",
    features={
        "qk_norm": dict(model=mutate_qk_norm_unit),
        "sliding_window": dict(cfg=set_attr("sliding_window", 1 << 20)),
        "rope_local_base_freq": dict(cfg=g3_set_local_theta),
        "global_rope_linear": dict(cfg=g3_global_default),
        "query_pre_attn_scalar": dict(cfg=set_attr("query_pre_attn_scalar", 8)),
        "norm_one_plus_w": dict(model=mutate_norms("minus_one")),
        "embed_scale": dict(model=mutate_no_embed_scale),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)
case(
    name="phi3", family=True, kinds=PHI3_KINDS,
    make_config=lambda: Phi3Config(**dict(
        COMMON, num_hidden_layers=2, sliding_window=8, tie_word_embeddings=True, max_position_embeddings=256,
        original_max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    highlights="Phi-3 (Phi3ForCausalLM): fused qkv_proj [q|k|v] and gate_up_proj [gate|up], sliding_window 8 on "
               "every layer, default rope, partial_rotary_factor 1.0, tied embeddings (as Phi-4-mini; Phi-3/3.5 "
               "are untied, see rope-longrope)",
    features={
        "sliding_window": dict(cfg=set_attr("sliding_window", None)),
        "norm_weights": dict(model=mutate_norms("unit")),
    },
)

# ---- rope variants ---------------------------------------------------------------------------------------
case(
    name="rope-linear", family=False, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
    highlights="Llama, rope_type linear factor 4 (inv_freq / 4), theta 1e4, head_dim 8",
    features={"rope_linear": dict(cfg=set_rope(rope_default))},
)
case(
    name="rope-dynamic", family=False, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
                                  max_position_embeddings=40),
    highlights="Llama, rope_type dynamic (NTK) factor 2, max_position_embeddings 40: rows of length 41/48/57/64 get "
               "base * (2*L/40 - 1)^(d/(d-2)), rows of 20/23/28/33 plain rope",
    features={"rope_dynamic": dict(cfg=set_rope(rope_default))},
)
case(
    name="rope-yarn", family=False, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg(
        {"rope_type": "yarn", "factor": 16.0, "rope_theta": 100.0, "original_max_position_embeddings": 32,
         "beta_fast": 8.0, "beta_slow": 1.0},
        max_position_embeddings=512),
    highlights="Llama, rope_type yarn factor 16, original_max_position_embeddings 32 (max_position_embeddings 512), "
               "beta_fast 8, beta_slow 1, theta 100 (correction range [0, 2] after truncation, so pair 1 is a 50/50 "
               "blend), attention_factor unset -> 0.1*ln(16)+1 = 1.2773 on cos/sin, truncate unset (true)",
    features={
        "rope_yarn": dict(cfg=set_rope(rope_default)),
        "yarn_attention_factor": dict(cfg=set_rope(rope_set(attention_factor=1.0))),
    },
)
case(
    name="rope-yarn-truncate", family=False, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg(
        {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1000.0, "original_max_position_embeddings": 48,
         "beta_fast": 4.0, "beta_slow": 1.0, "truncate": False, "mscale": 1.0, "mscale_all_dim": 0.5},
        max_position_embeddings=192),
    highlights="Llama, rope_type yarn factor 4, original_max_position_embeddings 48 (max_position_embeddings 192), "
               "beta_fast 4, beta_slow 1, theta 1000, truncate false (correction range [0.375, 1.177] kept "
               "fractional), mscale 1.0 / mscale_all_dim 0.5 -> attention_factor = (0.1*ln4+1)/(0.05*ln4+1) = 1.0648",
    features={
        "rope_yarn": dict(cfg=set_rope(rope_default)),
        "yarn_truncate_false": dict(cfg=set_rope(rope_set(truncate=True))),
        "yarn_mscale": dict(cfg=set_rope(rope_del("mscale", "mscale_all_dim"))),
    },
)
case(
    name="rope-longrope", family=False, kinds=PHI3_KINDS,
    make_config=lambda: Phi3Config(**dict(
        COMMON, num_hidden_layers=2, tie_word_embeddings=False, max_position_embeddings=128,
        original_max_position_embeddings=32, rms_norm_eps=1e-5, sliding_window=None,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": phi3_short_factor(4), "long_factor": phi3_long_factor(4)})),
    highlights="Phi-3.5 style Phi3ForCausalLM: rope_type longrope, short_factor/long_factor of length head_dim/2 = 4, "
               "no 'factor' key (factor = max_position_embeddings/original = 128/32 = 4, attention_factor = "
               "sqrt(1+ln4/ln32) on cos/sin), original_max_position_embeddings 32 (top level, which overrides the "
               "rope dict): rows 33..64 use long_factor, 20..28 short_factor; untied lm_head",
    features={
        "rope_longrope": dict(cfg=set_rope(rope_default)),
        "longrope_long_vs_short": dict(cfg=set_rope(lambda rp: dict(rp, long_factor=list(rp["short_factor"])))),
        "longrope_attention_factor": dict(cfg=set_rope(rope_set(attention_factor=1.0))),
    },
)
case(
    name="rope-legacy-key", family=False, kinds=LLAMA_KINDS,
    make_config=lambda: llama_cfg({"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}),
    legacy={"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 50000.0},
    highlights="Llama, config.json edited after saving to the old layout: \"rope_scaling\": {\"type\": \"linear\", "
               "\"factor\": 2.0} and top-level \"rope_theta\": 50000.0 (no rope_parameters); transformers 5 loads it "
               "identically to the new layout (asserted)",
    features={"rope_linear": dict(cfg=set_rope(rope_default))},
)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------

def seed_of(name, salt):
    return zlib.crc32(f"{name}/{salt}".encode()) & 0x7FFFFFFF


def gen(name, salt):
    g = torch.Generator()
    g.manual_seed(seed_of(name, salt))
    return g


def layer_names(model, kinds):
    n_blocks = model.config.num_hidden_layers
    names = []
    mods = dict(model.named_modules())
    for b in range(n_blocks):
        for k in kinds:
            n = f"model.layers.{b}.{KIND_PARENT[k]}.{k}"
            assert n in mods and isinstance(mods[n], nn.Linear), n
            names.append(n)
    # every linear module inside the blocks is one of them
    block_linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    assert sorted(block_linears) == sorted(names), (block_linears, names)
    return names


def init_weights(model, g):
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    done = set()
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                if name == "lm_head":
                    if tied:
                        continue
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * HEAD_STD)
                else:
                    std = LIN_GAIN / math.sqrt(mod.in_features)
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * std)
                done.add(id(mod.weight))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * BIAS_STD)
                    done.add(id(mod.bias))
            elif isinstance(mod, nn.Embedding):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * EMB_STD)
                done.add(id(mod.weight))
            elif "RMSNorm" in type(mod).__name__:
                lo, hi = NORM_GEMMA if "Gemma" in type(mod).__name__ else NORM_LLAMA
                mod.weight.copy_(lo + (hi - lo) * torch.rand(mod.weight.shape, generator=g))
                done.add(id(mod.weight))
    for n, p in model.named_parameters():
        assert id(p) in done, f"parameter {n} not initialised"


def make_rows(name):
    g = gen(name, "rows")
    rows = []
    for L in LENGTHS:
        ids = torch.randint(3, VOCAB, (L,), generator=g).tolist()
        ids[0] = BOS
        ids[-1] = EOS
        lo, hi = max(2, L // 5), L - max(3, L // 5)
        p = int(torch.randint(lo, hi + 1, (1,), generator=g))
        labels = [-100] * p + ids[p:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def load_f32(path, config=None):
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if config is not None:
        kw["config"] = config
    m = AutoModelForCausalLM.from_pretrained(path, **kw)
    m.eval()
    m.requires_grad_(False)
    return m


def rotary_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]


def reset_rotary(model):
    """Restore every rotary module's sequence-length-dependent state to its post-__init__ value."""
    for rot in rotary_modules(model):
        if isinstance(rot.rope_type, dict):  # per-layer-type rope (Gemma 3)
            for lt in rot.rope_type:
                orig = getattr(rot, f"{lt}_original_inv_freq")
                rot.register_buffer(f"{lt}_inv_freq", orig.clone(), persistent=False)
                if hasattr(rot, f"{lt}_max_seq_len_cached"):
                    setattr(rot, f"{lt}_max_seq_len_cached", rot.original_max_seq_len)
                if hasattr(rot, f"{lt}_long_inv_freq"):
                    delattr(rot, f"{lt}_long_inv_freq")
        else:
            rot.register_buffer("inv_freq", rot.original_inv_freq.clone(), persistent=False)
            if hasattr(rot, "long_inv_freq"):
                delattr(rot, "long_inv_freq")
        rot.max_seq_len_cached = rot.original_max_seq_len


def rope_state(model):
    out = {}
    for rot in rotary_modules(model):
        if isinstance(rot.rope_type, dict):
            for lt in rot.rope_type:
                out[lt] = {"rope_type": rot.rope_type[lt],
                           "inv_freq": [float(x) for x in getattr(rot, f"{lt}_inv_freq")],
                           "attention_scaling": float(getattr(rot, f"{lt}_attention_scaling"))}
        else:
            out["all_layers"] = {"rope_type": rot.rope_type, "inv_freq": [float(x) for x in rot.inv_freq],
                                 "attention_scaling": float(rot.attention_scaling)}
    return out


def row_tensors(rows):
    return [(torch.tensor(r["input_ids"], dtype=torch.long), torch.tensor(r["labels"], dtype=torch.long))
            for r in rows]


def token_nll(logits, labels):
    """logits [L, V], labels [L] -> per-token NLL over positions t whose target labels[t+1] != -100"""
    logp = torch.log_softmax(logits[:-1], dim=-1)
    tgt = labels[1:]
    keep = tgt != -100
    return -logp[keep].gather(-1, tgt[keep].unsqueeze(-1)).squeeze(-1)


class Oracle:
    """NLL of theta0 + sum_i gamma_i * Delta_i through torch.func.functional_call on a float32 eager model."""

    def __init__(self, model, names, deltas):
        self.model = model
        self.names = names
        params = dict(model.named_parameters())
        self.w0 = [params[n + ".weight"].detach() for n in names]
        self.deltas = [deltas[n] for n in names]
        for w, d, n in zip(self.w0, self.deltas, names):
            assert w.shape == d.shape, (n, w.shape, d.shape)

    def params(self, gammas):
        return {n + ".weight": w + g * d for n, w, d, g in zip(self.names, self.w0, self.deltas, gammas)}

    def row(self, ids, labels, gammas):
        reset_rotary(self.model)
        out = torch.func.functional_call(
            self.model, self.params(gammas), args=(), kwargs={"input_ids": ids[None], "use_cache": False})
        return token_nll(out.logits[0], labels)

    def pooled(self, rows, gammas):
        tot, cnt = 0.0, 0
        for ids, labels in rows:
            t = self.row(ids, labels, gammas)
            tot = tot + t.sum()
            cnt += t.numel()
        return tot / cnt, cnt


def plain_pooled(model, rows):
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            reset_rotary(model)
            out = model(input_ids=ids[None], use_cache=False)
            t = token_nll(out.logits[0], labels)
            tot += float(t.sum())
            cnt += t.numel()
    return tot / cnt


def lora_deltas(lora_dir, names):
    cfg = json.load(open(os.path.join(lora_dir, "adapter_config.json")))
    assert cfg["r"] == LORA_R and cfg["lora_alpha"] == LORA_ALPHA and not cfg.get("use_rslora")
    assert not cfg.get("rank_pattern") and not cfg.get("alpha_pattern")
    scale = cfg["lora_alpha"] / cfg["r"]
    t = load_file(os.path.join(lora_dir, "adapter_model.safetensors"))
    out = {}
    for n in names:
        a = t[f"base_model.model.{n}.lora_A.weight"]
        b = t[f"base_model.model.{n}.lora_B.weight"]
        assert a.dtype == torch.float32 and b.dtype == torch.float32
        out[n] = scale * (b.float() @ a.float())
    assert len(t) == 2 * len(names), sorted(t)
    return out


def full_deltas(base_dir, full_dir, names):
    b = load_file(os.path.join(base_dir, "model.safetensors"))
    a = load_file(os.path.join(full_dir, "model.safetensors"))
    assert set(a) == set(b)
    targets = {n + ".weight" for n in names}
    for k in b:
        assert a[k].dtype == torch.bfloat16 and b[k].dtype == torch.bfloat16, k
        if k not in targets:
            assert torch.equal(a[k], b[k]), f"full/{k} differs from base"
    return {n: a[n + ".weight"].float() - b[n + ".weight"].float() for n in names}


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------------------------------
# per case
# ----------------------------------------------------------------------------------------------------------

def copy_tokenizer(dst):
    """tokenizer_config.json: byte copy. tokenizer.json: the same JSON document re-serialised without indentation
    (8 kB instead of 21 kB, x14 cases; json.loads of both is asserted equal and the tokenizers library must encode
    a probe text identically)"""
    shutil.copyfile(os.path.join(TOKENIZER_SRC, "tokenizer_config.json"), os.path.join(dst, "tokenizer_config.json"))
    src = os.path.join(TOKENIZER_SRC, "tokenizer.json")
    doc = json.load(open(src, encoding="utf-8"))
    out = os.path.join(dst, "tokenizer.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    assert json.load(open(out, encoding="utf-8")) == doc
    if TOKENIZER_PROBE.get("ok") is None:
        from tokenizers import Tokenizer
        probe = "### Instruction:\nWhat is a tokenizer? ünïcødé 123\n\n### Response:\n</s><s> ok"
        a, b = Tokenizer.from_file(src), Tokenizer.from_file(out)
        assert a.encode(probe).ids == b.encode(probe).ids and a.get_vocab() == b.get_vocab()
        TOKENIZER_PROBE["ok"] = True


TOKENIZER_PROBE = {}


def save_model(model, dst):
    model.save_pretrained(dst)
    for fn in os.listdir(dst):
        os.chmod(os.path.join(dst, fn), 0o644)
    gc = os.path.join(dst, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)  # not needed by the fixtures (no generation)


def build_base(c, base_dir):
    cfg = c["make_config"]()
    cfg.architectures = None
    torch.manual_seed(seed_of(c["name"], "torch"))
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float()
    init_weights(model, gen(c["name"], "weights"))
    model = model.to(torch.bfloat16)
    save_model(model, base_dir)
    copy_tokenizer(base_dir)
    if "legacy" in c:
        p = os.path.join(base_dir, "config.json")
        d = json.load(open(p))
        new_rope = d.pop("rope_parameters")
        d.pop("rope_theta", None)
        d.update(c["legacy"])
        with open(p, "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")
        return new_rope
    return None


def build_full(c, base_dir, full_dir, names):
    model = load_f32(base_dir)
    g = gen(c["name"], "full")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            w = params[n + ".weight"]
            w.add_(torch.randn(w.shape, generator=g) * (FULL_NOISE_REL * float(w.std())))
    model = model.to(torch.bfloat16)
    save_model(model, full_dir)


def build_lora(c, base_dir, lora_dir, names):
    model = load_f32(base_dir)
    lcfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=list(c["kinds"]),
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    g = gen(c["name"], "lora")
    found = 0
    with torch.no_grad():
        for n in names:  # canonical order -> deterministic values
            mod = pm.get_submodule("base_model.model." + n)
            assert isinstance(mod, LoraLayer)
            a = mod.lora_A["default"].weight
            b = mod.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=g) * LORA_A_STD)
            b.copy_(torch.randn(b.shape, generator=g) * LORA_B_STD)
            found += 1
    n_lora = sum(1 for m in pm.modules() if isinstance(m, LoraLayer))
    assert found == n_lora == len(names), (found, n_lora, len(names))
    pm.peft_config["default"].base_model_name_or_path = None
    pm.base_model.model.name_or_path = ""  # -> adapter_config base_model_name_or_path null (no local path)
    pm.save_pretrained(lora_dir)
    for fn in os.listdir(lora_dir):
        os.chmod(os.path.join(lora_dir, fn), 0o644)
    rd = os.path.join(lora_dir, "README.md")
    if os.path.exists(rd):
        os.remove(rd)  # PEFT's auto-generated model card


def peft_crosscheck(base_dir, lora_dir, names, rows, oracle, gamma_sets):
    pbase = load_f32(base_dir)
    pm = PeftModel.from_pretrained(pbase, lora_dir)
    pm.eval()
    pm.requires_grad_(False)
    mods = {}
    for n, m in pm.named_modules():
        if isinstance(m, LoraLayer):
            mods[n[len("base_model.model."):]] = m
    assert sorted(mods) == sorted(names), (sorted(mods), names)
    base_scale = {n: m.scaling["default"] for n, m in mods.items()}
    for n, s in base_scale.items():
        assert abs(s - LORA_ALPHA / LORA_R) < 1e-12, (n, s)
    worst = 0.0
    for gam in gamma_sets:
        for n, gi in zip(names, gam):
            mods[n].scaling["default"] = base_scale[n] * float(gi)
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for ids, labels in rows:
                reset_rotary(pm)
                out = pm(input_ids=ids[None], use_cache=False)
                t = token_nll(out.logits[0], labels)
                tot += float(t.sum())
                cnt += t.numel()
            ref, _ = oracle.pooled(rows, [float(x) for x in gam])
        d = abs(tot / cnt - float(ref))
        worst = max(worst, d)
        assert d <= PEFT_TOL, f"PEFT forward disagrees with explicit delta path: {tot / cnt} vs {float(ref)}"
    return worst


def grad_check(oracle, rows, names):
    N = len(names)
    s = torch.full((N,), S_INIT, dtype=torch.float32, requires_grad=True)
    gam = torch.sigmoid(s)
    nll, _ = oracle.pooled(rows[:GRAD_ROWS], list(gam))
    J = nll + LAMBDA * gam.mean()
    J.backward()
    grad = s.grad.detach().clone()
    return {"s": S_INIT, "lambda": LAMBDA, "rows": GRAD_ROWS, "J": float(J.detach()), "nll": float(nll.detach()),
            "dJ_ds": {n: float(v) for n, v in zip(names, grad)}}, grad


def fd_check(model, names, deltas, rows, grad, idxs, h=5e-3):
    """central finite differences of J (model widened to float64; transformers' RMSNorms and softmax still compute
    in float32, so J carries ~1e-7 noise, hence the moderate step and tolerance) for a few coordinates vs the
    float32 autograd gradient: catches sign, chain-rule or normalisation errors, not last-digit ones"""
    m64 = copy.deepcopy(model).double()
    d64 = {n: deltas[n].double() for n in names}
    o64 = Oracle(m64, names, d64)
    N = len(names)

    def J(svec):
        gam = [1.0 / (1.0 + math.exp(-x)) for x in svec]
        with torch.no_grad():
            nll, _ = o64.pooled(rows[:GRAD_ROWS], gam)
        return float(nll) + LAMBDA * sum(gam) / N

    worst = 0.0
    for i in idxs:
        sp = [S_INIT] * N
        sm = [S_INIT] * N
        sp[i] += h
        sm[i] -= h
        fd = (J(sp) - J(sm)) / (2 * h)
        ag = float(grad[i])
        err = abs(fd - ag)
        worst = max(worst, err / max(1e-3, abs(fd)))
        assert err <= 5e-5 + 3e-2 * abs(fd), f"gradient check failed for {names[i]}: fd {fd} autograd {ag}"
    return worst


def gamma_entry(oracle, rows):
    out = {}
    with torch.no_grad():
        for g, key in ((0.0, "mean_nll_gamma_0"), (0.5, "mean_nll_gamma_0.5"), (1.0, "mean_nll_gamma_1")):
            v, cnt = oracle.pooled(rows, [g] * len(oracle.names))
            out[key] = float(v)
        out["tokens"] = cnt
        ids, labels = rows[0]
        out["token_nll_row0_gamma_0"] = [float(x) for x in oracle.row(ids, labels, [0.0] * len(oracle.names))]
        out["token_nll_row0_gamma_1"] = [float(x) for x in oracle.row(ids, labels, [1.0] * len(oracle.names))]
    return out


def run_case(c, out_root, log):
    name = c["name"]
    d = os.path.join(out_root, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    base_dir, lora_dir, full_dir = (os.path.join(d, x) for x in ("base", "lora", "full"))
    os.makedirs(base_dir)

    new_rope = build_base(c, base_dir)
    rows_json = make_rows(name)
    with open(os.path.join(d, "rows.jsonl"), "w") as f:
        for r in rows_json:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    rows = row_tensors(rows_json)

    base = load_f32(base_dir)
    names = layer_names(base, c["kinds"])
    cfg_loaded = base.config
    arch = type(base).__name__

    extra_checks = {}
    if new_rope is not None:
        # the legacy layout must load exactly like the new one
        assert cfg_loaded.rope_parameters.get("rope_type") == new_rope["rope_type"], cfg_loaded.rope_parameters
        assert cfg_loaded.rope_parameters.get("factor") == new_rope["factor"]
        assert cfg_loaded.rope_parameters.get("rope_theta") == new_rope["rope_theta"]
        ncfg = copy.deepcopy(cfg_loaded)
        ncfg.rope_parameters = dict(new_rope)
        m_new = load_f32(base_dir, config=ncfg)
        for r1, r2 in zip(rotary_modules(base), rotary_modules(m_new)):
            assert torch.equal(r1.inv_freq, r2.inv_freq) and r1.attention_scaling == r2.attention_scaling
        a, b = plain_pooled(base, rows), plain_pooled(m_new, rows)
        assert a == b, (a, b)
        extra_checks["legacy_layout_equivalence"] = {
            "loaded_rope_parameters": dict(cfg_loaded.rope_parameters), "new_layout_rope_parameters": new_rope,
            "nll_gamma_0_legacy": a, "nll_gamma_0_new_layout": b}

    # ---- adapters / aligned checkpoints
    build_lora(c, base_dir, lora_dir, names)
    deltas = {"lora": lora_deltas(lora_dir, names)}
    if c["family"]:
        build_full(c, base_dir, full_dir, names)
        deltas["full"] = full_deltas(base_dir, full_dir, names)

    aligned = {}
    for kind, dl in deltas.items():
        orc = Oracle(base, names, dl)
        ent = gamma_entry(orc, rows)
        assert all(math.isfinite(ent[k]) for k in ent if k.startswith("mean_nll"))
        assert ent["mean_nll_gamma_0"] < 3 * math.log(VOCAB) and ent["mean_nll_gamma_1"] < 3 * math.log(VOCAB), ent
        move = abs(ent["mean_nll_gamma_1"] - ent["mean_nll_gamma_0"])
        tok_move = max(abs(a - b) for a, b in zip(ent["token_nll_row0_gamma_0"], ent["token_nll_row0_gamma_1"]))
        assert move > 1e-3 and tok_move > 0.1, f"{name}/{kind}: gamma barely moves the loss ({move}, {tok_move})"
        gc, grad = grad_check(orc, rows, names)
        ent["grad_check"] = gc
        N = len(names)
        fd_worst = fd_check(base, names, dl, rows, grad, sorted({0, N // 2, N - 1}))
        # cross-checks
        if kind == "lora":
            rnd = torch.rand(N, generator=gen(name, "gamma-check")).tolist()
            worst = peft_crosscheck(base_dir, lora_dir, names, rows, orc, [[0.0] * N, [0.5] * N, [1.0] * N, rnd])
            extra_checks["peft_vs_explicit_max_abs_diff"] = worst
        else:
            ali = load_f32(full_dir)
            v = plain_pooled(ali, rows)
            dd = abs(v - ent["mean_nll_gamma_1"])
            assert dd <= PEFT_TOL, f"aligned model NLL {v} vs explicit gamma=1 {ent['mean_nll_gamma_1']}"
            extra_checks["aligned_model_vs_explicit_gamma_1_abs_diff"] = dd
        b0 = plain_pooled(base, rows)
        assert abs(b0 - ent["mean_nll_gamma_0"]) <= 1e-5, (b0, ent["mean_nll_gamma_0"])
        extra_checks[f"fd_float64_vs_autograd_worst_rel_err_{kind}"] = fd_worst
        aligned[kind] = ent

    # ---- rope state actually used per row (for debugging a RoPE implementation)
    rope_rows = []
    with torch.no_grad():
        for ids, labels in rows:
            reset_rotary(base)
            base(input_ids=ids[None], use_cache=False)
            rope_rows.append(rope_state(base))
    if all(r == rope_rows[0] for r in rope_rows):
        rope_info = {"same_for_all_rows": True, "state": rope_rows[0]}
    else:
        rope_info = {"same_for_all_rows": False,
                     "per_row": [{"row": i, "length": LENGTHS[i], "state": s} for i, s in enumerate(rope_rows)]}

    # ---- feature checks (gamma = 1, LoRA deltas)
    nll_on = aligned["lora"]["mean_nll_gamma_1"]
    feats = {}
    for fname, spec in c["features"].items():
        cfg = copy.deepcopy(AutoConfig.from_pretrained(base_dir))
        if "cfg" in spec:
            spec["cfg"](cfg)
        m = load_f32(base_dir, config=cfg)
        if "model" in spec:
            with torch.no_grad():
                spec["model"](m)
        with torch.no_grad():
            off, _ = Oracle(m, names, deltas["lora"]).pooled(rows, [1.0] * len(names))
        off = float(off)
        feats[fname] = {"nll_on": nll_on, "nll_off": off, "diff": abs(nll_on - off)}
    failed = {k: v for k, v in feats.items() if not v["diff"] > FEATURE_MIN_DIFF}

    # ---- reference.json
    rp = cfg_loaded.rope_parameters
    notes = [PER_ROW_NOTE, c["highlights"]]
    rt = [v.get("rope_type") for v in (rp.values() if "full_attention" in rp else [rp]) if isinstance(v, dict)]
    if "dynamic" in rt:
        notes.append(
            "Dynamic NTK: transformers' dynamic_rope_update (modeling_rope_utils.py) is stateful: it recomputes "
            "inv_freq only when seq_len = max(position_ids)+1 exceeds max_seq_len_cached (growth), and resets to "
            "the original inv_freq only when seq_len < max_position_embeddings after growth; in between it keeps "
            "the frequencies of the longest sequence seen so far, and a padded batch uses the batch's longest row. "
            "The fixture instead resets the rotary module before every row, i.e. each row uses "
            "base' = base * (factor*L/mpe - (factor-1))^(d/(d-2)) with L = len(input_ids) when L > mpe, else base.")
    if "longrope" in rt:
        notes.append(
            "LongRoPE: for each row, L = len(input_ids); L > original_max_position_embeddings selects long_factor "
            "for ALL positions of the row, otherwise short_factor. attention_factor (cos/sin multiplier) is fixed at "
            "init from factor = max_position_embeddings / original_max_position_embeddings and applies to short "
            "and long rows alike. (Stateless per row in transformers, the reset is a no-op.)")
    if c["family"]:
        notes.append("full/: every block linear weight = base + N(0, (0.7*std(W))^2), rounded to bf16; all other "
                     "tensors (embeddings, norms, biases) bit-identical to base. Delta = full - base in float32.")
    notes.append("LoRA: Delta = (lora_alpha/r) * B @ A = 2 * B @ A, A and B seeded random (PEFT's B=0 init "
                 "overwritten). One gamma per target module.")
    ref = {
        "case": name,
        "architecture": arch,
        "model_type": cfg_loaded.model_type,
        "notes": " ".join(notes),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "layers": names,
        "row_lengths": LENGTHS,
        "aligned": aligned,
        "feature_checks": feats,
        "rope": rope_info,
        "checks": extra_checks,
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")

    log(f"{name:20s} {arch:22s} lora nll γ0 {aligned['lora']['mean_nll_gamma_0']:.4f} "
        f"γ1 {aligned['lora']['mean_nll_gamma_1']:.4f}"
        + (f" | full γ1 {aligned['full']['mean_nll_gamma_1']:.4f}" if "full" in aligned else ""))
    for k, v in feats.items():
        log(f"    feature {k:26s} on {v['nll_on']:.5f} off {v['nll_off']:.5f} diff {v['diff']:.5f}"
            + ("   <-- TOO SMALL" if k in failed else ""))
    return failed, ref


README_HEAD = """# fixtures/arch — multi-architecture PyTorch oracle fixtures

Generated by `scripts/make-arch-fixtures.py` (deterministic and seeded; no Hugging Face Hub access: every config
is built by hand through its transformers config class). Regenerate with

    pip install torch transformers peft safetensors
    python3 scripts/make-arch-fixtures.py            # rewrites fixtures/arch/ (about 1.5 minutes on one CPU core)
    python3 scripts/make-arch-fixtures.py --only gemma3 rope-yarn

The script exits non-zero if any cross-check or feature check fails. Generated with torch {torch},
transformers {transformers}, peft {peft}, safetensors {safetensors} (Python {python}). Other versions may change
the last digits of the float32 values.

Shapes (all cases): vocab 512, hidden 32, 4 attention heads / 2 KV heads, intermediate 48, 2 blocks (Gemma 3: 3),
head_dim 8 unless the case says otherwise, rows of 20..64 tokens.

## Layout of each case

    <case>/base/           config.json + model.safetensors (bf16, save_pretrained), tokenizer_config.json (a byte
                           copy of fixtures/tiny/base-A's), tokenizer.json (fixtures/tiny/base-A's JSON document
                           written without indentation to save space: json.loads-equal, same encodings);
                           vocab 512, bos 1, eos 2, pad 0 set in config.json
    <case>/lora/           PEFT LoRA adapter (save_pretrained, float32): r=4, lora_alpha=8 (scale 2), no rsLoRA,
                           no rank/alpha patterns, target_modules = every linear kind of the architecture,
                           base_model_name_or_path null; A and B seeded random (PEFT's B=0 overwritten)
    <case>/full/           (family cases only) aligned full checkpoint, bf16: every block linear weight = base +
                           N(0, (0.7*std(W))^2); embeddings, norms, biases bit-identical to base (asserted)
    <case>/rows.jsonl      8 pre-tokenized rows {{"input_ids", "labels"}}, lengths {lengths}; input_ids[0] = 1 (BOS),
                           last token 2 (EOS), other ids random in 3..511; labels = -100 on a random-length prompt
                           prefix, = input_ids on the response (which ends with the EOS)
    <case>/reference.json  oracle values, below

save_pretrained's generation_config.json and PEFT's auto-generated README.md model card are deleted; nothing else
is edited, except rope-legacy-key/base/config.json (on purpose, see below).

## reference.json

    case, architecture, model_type, notes (per-row semantics, config highlights), torch, transformers, peft
    layers                  canonical layer names (block ascending, then kind in the order the block applies them:
                            q k v o gate up down; Phi-3: qkv o gate_up down), module paths without .weight
    row_lengths
    aligned.lora / aligned.full:
      mean_nll_gamma_0, mean_nll_gamma_0.5, mean_nll_gamma_1
                            mean NLL (natural log) over all response tokens of all 8 rows, token-weighted:
                            position t predicts token t+1 where labels[t+1] != -100; theta = theta0 + gamma*sum_i Delta_i
      tokens                number of scored tokens
      token_nll_row0_gamma_0, token_nll_row0_gamma_1    per-token NLL list of row 0
      grad_check            {{s: 3.0, lambda: 1.0, rows: 4, J, nll, dJ_ds: {{layer: value}}}} with
                            J(s) = NLL(theta0 + sum_i sigmoid(s_i) Delta_i; rows 0-3 pooled) + lambda * mean_i sigmoid(s_i)
                            at s_i = 3 for all i (autograd, float32)
    feature_checks          {{feature: {{nll_on, nll_off, diff}}}}: gamma=1 LoRA mean NLL of the fixture and of the
                            same weights with the feature switched off (list below); every diff > 1e-3 (asserted)
    rope                    inv_freq and attention_scaling (cos/sin multiplier) transformers used, per layer type,
                            per row when they depend on the row length: for debugging a RoPE implementation
    checks                  the script's cross-checks (all asserted):
                              peft_vs_explicit_max_abs_diff: PeftModel.from_pretrained with every LoRA layer's
                                scaling multiplied by its gamma (gamma = 0, 0.5, 1 and a random vector) vs the
                                explicit-delta path (<= 1e-5)
                              aligned_model_vs_explicit_gamma_1_abs_diff: the saved full/ model vs theta0 + Delta
                              fd_float64_vs_autograd_worst_rel_err_*: central differences (model widened to float64)
                                on 3 coordinates vs the autograd dJ_ds
                              legacy_layout_equivalence (rope-legacy-key only)

Deltas: full = aligned - base (both read as float32 from the saved bf16 files); LoRA = (lora_alpha/r) * B @ A from
adapter_model.safetensors. One gamma per PEFT target module (Phi-3's fused qkv_proj is one layer, one gamma).

Computation: float32 on the CPU from the saved files (`AutoModelForCausalLM.from_pretrained(dir,
dtype=torch.float32, attn_implementation="eager")`), W0 + gamma_i*Delta_i applied through
`torch.func.functional_call`, gradients by autograd.

Per-row semantics: every row is its own forward pass (batch 1, no padding, no attention mask, positions 0..L-1,
use_cache=False) over all L = len(input_ids) tokens (the final EOS included, its logits unused), and the rotary
module's state is reset to its post-__init__ value before each row. So for `dynamic` and `longrope` the
frequencies are those of a fresh model on that row alone, with seq_len = L: dynamic uses
base * (factor*L/max_position_embeddings - (factor-1))^(d/(d-2)) when L > max_position_embeddings (else the plain
base); longrope uses long_factor for every position of the row when L > original_max_position_embeddings (else
short_factor). transformers' own dynamic update (`dynamic_rope_update` in modeling_rope_utils.py) is stateful: it
only grows (recomputes when seq_len exceeds the longest length seen), resets to the original frequencies only when
a later seq_len is < max_position_embeddings, and a padded batch uses its longest row; the fixture does not
reproduce that order dependence.

Weights: block linear weights N(0, (1/sqrt(in_features))^2), biases N(0, 0.3^2), embeddings N(0, 0.3^2),
untied lm_head N(0, 0.3^2), Llama-type RMSNorm weights U(0.6, 1.4), Gemma-type (1+w) weights U(-0.4, 0.4):
every norm, q_norm/k_norm included, is non-trivial, so a wrong norm convention shows. LoRA A, B ~ N(0, 0.25^2).

{size_line}

## Cases
"""


def tree_sizes(path):
    """(bytes of all files, du -sb style bytes incl. 4096 per directory, allocated bytes as du -s reports)"""
    files = app = alloc = 0
    for root, _, fns in os.walk(path):
        st = os.stat(root)
        app += st.st_size
        alloc += st.st_blocks * 512
        for fn in fns:
            st = os.stat(os.path.join(root, fn))
            files += st.st_size
            app += st.st_size
            alloc += st.st_blocks * 512
    return files, app, alloc


def write_readme(out_root, refs, sizes, size_line=""):
    lines = [README_HEAD.format(
        torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
        safetensors=safetensors.__version__, python=sys.version.split()[0],
        lengths=", ".join(map(str, LENGTHS)), size_line=size_line)]
    by = {c["name"]: c for c in CASES}
    lines.append("| case | architecture | full/ | what it exercises | feature checks (switched off by) |")
    lines.append("|---|---|---|---|---|")
    for name, ref in refs.items():
        c = by[name]
        fc = ", ".join(f"`{k}`" for k in ref["feature_checks"])
        lines.append(f"| `{name}` | {ref['architecture']} | {'yes' if c['family'] else 'no'} | "
                     f"{c['highlights']} | {fc} |")
    lines.append("""
Feature switches (the `nll_off` model): `sliding_window` → sliding_window null (Mistral, Phi-3) or 2^20
(Gemma 2/3); `attn_logit_softcapping`/`final_logit_softcapping` → null; `query_pre_attn_scalar` → head_dim;
`qk_norm` → unit q_norm/k_norm weights (Qwen3 w=1, Gemma 3 w=0); `norm_one_plus_w` → every Gemma norm weight
w replaced by w-1 (what an engine computing x_hat*w instead of x_hat*(1+w) would produce); `embed_scale` →
embedding multiplier 1 instead of sqrt(hidden); `norm_weights` → every norm multiplier 1; `qkv_bias` → zero
q/k/v biases; `rope_*` → rope_type default with the same rope_theta; `yarn_attention_factor` /
`longrope_attention_factor` → attention_factor 1.0; `yarn_truncate_false` → truncate true; `yarn_mscale` →
mscale/mscale_all_dim removed; `longrope_long_vs_short` → long_factor := short_factor;
`rope_local_base_freq` → local (sliding) layers use the global rope_theta 1e6; `global_rope_linear` → global
layers rope_type default.

`rope_theta` sits only inside `rope_parameters` in every case's config.json (the transformers 5 layout; Gemma 3
nests it per layer type: `rope_parameters.full_attention` / `rope_parameters.sliding_attention`), except
`rope-legacy-key`, whose config.json was rewritten after saving to the pre-5 layout
`"rope_scaling": {"type": "linear", "factor": 2.0}` + top-level `"rope_theta": 50000.0`. transformers 5 still
reads that layout (`PreTrainedConfig.__post_init__` → `convert_rope_params_to_dict` pops `rope_scaling` and
`rope_theta`; `standardize_rope_params` copies `type` to `rope_type`); the script asserts identical inv_freq and
identical NLL to the new layout.
""")
    lines.append("## Sizes\n")
    lines.append("| case | bytes |")
    lines.append("|---|---|")
    for name, s in sizes.items():
        lines.append(f"| `{name}` | {s} |")
    with open(os.path.join(out_root, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def dir_bytes(path):
    tot = 0
    for root, _, files in os.walk(path):
        for fn in files:
            tot += os.path.getsize(os.path.join(root, fn))
    return tot


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "fixtures", "arch"))
    ap.add_argument("--only", nargs="*", help="regenerate only these cases (README lists what exists)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    names = [c["name"] for c in CASES]
    todo = args.only or names
    for t in todo:
        if t not in names:
            sys.exit(f"unknown case {t!r}; cases: {', '.join(names)}")
    failures = {}
    for c in CASES:
        if c["name"] not in todo:
            continue
        failed, _ = run_case(c, args.out, lambda s: print(s, flush=True))
        if failed:
            failures[c["name"]] = failed
    refs, sizes = {}, {}
    for n in names:
        p = os.path.join(args.out, n, "reference.json")
        if os.path.exists(p):
            refs[n] = json.load(open(p))
            sizes[n] = dir_bytes(os.path.join(args.out, n))
    write_readme(args.out, refs, sizes, "Size: (computed after writing)")
    for _ in range(2):  # the README's own size is part of the total
        files, app, alloc = tree_sizes(args.out)
        line = (f"Size: the files total {files / 1e6:.2f} MB ({files} bytes); `du -sb` (directories counted as 4096 "
                f"bytes each) {app / 1e6:.2f} MB = {app / 2**20:.2f} MiB; allocated on this 4 KiB-block filesystem "
                f"(`du -s`) {alloc / 2**20:.2f} MiB, the difference being the partly filled last block of each of "
                f"the many small files and the directories. git stores the 14 identical tokenizer files and the "
                f"identical base/full config.json pairs once.")
        write_readme(args.out, refs, sizes, line)
    files, app, alloc = tree_sizes(args.out)
    print(f"total: files {files} bytes, du -sb {app} bytes, allocated {alloc} bytes in {args.out}")
    if failures:
        for n, f in failures.items():
            for k, v in f.items():
                print(f"FEATURE CHECK FAILED: {n}/{k}: diff {v['diff']:.2e} <= {FEATURE_MIN_DIFF}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
