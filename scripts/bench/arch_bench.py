#!/usr/bin/env python3
"""Speed of the graphs bulkhead builds for each new architecture, against the same model's torch ONNX export on ONNX
Runtime and against sentence-transformers (PyTorch), at real model sizes, in one run.

For each architecture a random-weight model with a real model's config is generated here (never committed):

  xlm-roberta  multilingual-e5-base / bge-m3 family: XLM-RoBERTa base (12 x 768)
  gte          gte-base-en-v1.5: GTE NewModel 12 x 768, rotary with NTK scaling         (needs --gte-code)
  nomic-bert   nomic-embed-text-v1.5: NomicBERT 12 x 768, SwiGLU                         (needs --nomic-code)
  modernbert   gte-modernbert-base: ModernBERT-base 22 x 768, local/global attention
  qwen3        Qwen3-Embedding-0.6B's exact config: 28 x 1024, GQA 16/8, q/k norms

The encoders keep their real vocabulary size except XLM-RoBERTa (250,002 rows cut to 30,522: a Gather costs the same
per token whatever the table, and it saves 0.7 GB per copy); Qwen3 keeps all 151,669 rows. Texts are tokenized with
the architecture fixture's tokenizer (tests/fixtures/arch/), whose ids fit every table.

Each model is exported with torch.onnx.export (opset 17, dynamic batch and sequence), then measured in alternating
rounds: the Rust benchmark (`graph_bench --model DIR --torch-export FILE`, ONNX Runtime CPU, the built graph as
bulkhead runs it and the torch export side by side, interleaved) and sentence-transformers `encode` in a separate
Python process (batch 32), so both see the same machine. Prints one table per run (markdown), with the load average.

  PYTHON scripts/bench/arch_bench.py \\
      [--archs xlm-roberta modernbert qwen3 ...] [--gte-code DIR] [--nomic-code DIR] [--seconds 6] [--rounds 3]

(PYTHON: a Python with torch, transformers and sentence-transformers, as the fixture scripts under
scripts/fixtures/ need; the tests never need one.)

`--quick` runs tiny configs for a few seconds (what CI could run to check the script itself).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/arch"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Embeddings map sentences to vectors so that similar meanings land close together.",
    "Which compute unit really computed this answer, the CPU, the GPU or the Neural Engine?",
    "A segmentation fault in a native runtime must never take the whole server down.",
    "Search engines rank documents by the similarity of their embeddings to the query.",
    "Grüße aus Köln: der schnelle braune Fuchs springt über den faulen Hund.",
    "Le café est prêt, la réunion commence à neuf heures précises ce matin.",
    "Local inference should never lose a request to a crash in a worker process.",
]
TEXTS = [SENTENCES[i % len(SENTENCES)] for i in range(32)]


def configs(quick):
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    cfg = {
        "xlm-roberta": dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            vocab_size=30522, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, layer_norm_eps=1e-5,
        ),
        "gte": dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30528,
            max_position_embeddings=8192, type_vocab_size=0, layer_norm_type="layer_norm", layer_norm_eps=1e-12,
            position_embedding_type="rope", rope_theta=500000.0, rope_scaling={"type": "ntk", "factor": 2.0},
            pack_qkv=True, pad_token_id=0, hidden_act="gelu", hidden_dropout_prob=0.0, architectures=["NewModel"],
        ),
        "nomic-bert": dict(
            n_embd=768, n_head=12, n_layer=12, n_inner=3072, n_positions=8192, vocab_size=30528,
            activation_function="swiglu", rotary_emb_fraction=1.0, rotary_emb_base=1000, qkv_proj_bias=False,
            mlp_fc1_bias=False, mlp_fc2_bias=False, prenorm=False, type_vocab_size=2, layer_norm_epsilon=1e-12,
            pad_vocab_size_multiple=64, causal=False, use_flash_attn=False, fused_bias_fc=False,
            fused_dropout_add_ln=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
            architectures=["NomicBertModel"],
        ),
        "modernbert": dict(
            hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152, vocab_size=50368,
            global_attn_every_n_layers=3, local_attention=128, max_position_embeddings=8192, pad_token_id=50283,
            norm_eps=1e-5, global_rope_theta=160000.0, local_rope_theta=10000.0, hidden_activation="gelu",
        ),
        "qwen3": dict(
            hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
            intermediate_size=3072, vocab_size=151669, max_position_embeddings=32768, rope_theta=1000000.0,
            rms_norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=0, eos_token_id=0, bos_token_id=0,
        ),
    }
    if quick:
        for name, c in cfg.items():
            if name == "nomic-bert":
                c.update(n_embd=64, n_head=4, n_layer=2, n_inner=128)
            elif name == "qwen3":
                c.update(small, num_key_value_heads=2, head_dim=16, vocab_size=1000)
            else:
                c.update(small)
            if "vocab_size" in c and name != "qwen3":
                c["vocab_size"] = min(c["vocab_size"], 1000)
            if name == "modernbert":
                c["pad_token_id"] = 3
    return cfg


POOLING = {
    "xlm-roberta": ("mean", True),
    "gte": ("cls", True),
    "nomic-bert": ("mean", True),
    "modernbert": ("cls", True),
    "qwen3": ("lasttoken", True),
}


def make_model(name, cfg, code):
    import torch

    torch.manual_seed(0)
    if name == "xlm-roberta":
        from transformers import XLMRobertaConfig, XLMRobertaModel

        model = XLMRobertaModel(XLMRobertaConfig(**cfg), add_pooling_layer=False)
    elif name == "modernbert":
        from transformers import ModernBertConfig, ModernBertModel

        model = ModernBertModel(ModernBertConfig(**cfg))
    elif name == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        model = Qwen3Model(Qwen3Config(**cfg))
    else:
        sys.path.insert(0, str(ROOT / "scripts/fixtures"))
        import make_architectures as fx

        if name == "gte":
            make = fx.make_remote(code, "gte_reference", "configuration.py", "modeling.py", "NewConfig", "NewModel",
                                  cfg, 0)
        else:
            make = fx.make_remote(code, "nomic_reference", "configuration_hf_nomic_bert.py",
                                  "modeling_hf_nomic_bert.py", "NomicBertConfig", "NomicBertModel", cfg, 0)
        model, _ = make()
        return model.eval()
    # Normal weights like the fixtures: std 0.02 keeps activations of the deep real-size stacks in range.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    return model.eval()


def save_folder(name, model, out, code):
    """A sentence-transformers folder: the model's weights and config, the fixture's tokenizer and ST files."""
    model.save_pretrained(out)
    fixture = FIXTURES / name
    for f in ["tokenizer.json", "tokenizer_config.json", "modules.json", "sentence_bert_config.json",
              "config_sentence_transformers.json"]:
        if (fixture / f).exists():
            shutil.copy(fixture / f, out / f)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = 512
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    pooling, normalize = POOLING[name]
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"embedding_dimension": model.config.hidden_size if hasattr(model.config, "hidden_size") else
         model.config.n_embd, "pooling_mode": pooling, "include_prompt": True}))
    modules = [m for m in json.loads((out / "modules.json").read_text()) if normalize or "Normalize" not in m["type"]]
    (out / "modules.json").write_text(json.dumps(modules))
    if normalize:
        (out / "2_Normalize").mkdir(exist_ok=True)
    if code:
        src, files, auto_map = code
        for f in files:
            shutil.copy(Path(src) / f, out / f)
        c = json.loads((out / "config.json").read_text())
        c["auto_map"] = auto_map
        (out / "config.json").write_text(json.dumps(c, indent=2))


def torch_export(name, model, out_file):
    """torch.onnx.export of the bare model: input_ids, attention_mask -> last_hidden_state."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long) * 5
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}}
    errors = []
    for dynamo in (False, True):
        try:
            with torch.no_grad():
                torch.onnx.export(Wrapped(model), (ids, mask), str(out_file), input_names=["input_ids", "attention_mask"],
                                  output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                                  dynamo=dynamo, external_data=True)
            return None
        except Exception as e:  # noqa: BLE001 - report every exporter's failure
            errors.append(f"dynamo={dynamo}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return "; ".join(errors)


def st_worker(args):
    """Measures sentence-transformers encode (batch 32) for `seconds`; prints one JSON line."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    # sentence-transformers' default attention (SDPA) where the model supports it; remote code runs its own.
    kwargs = {} if args.code_fix else {"model_kwargs": {"attn_implementation": "sdpa"}}
    st = SentenceTransformer(args.model, device="cpu", trust_remote_code=True, **kwargs)
    if args.code_fix:
        # Remote code under transformers 5: the method it calls is gone and its non-persistent buffers (position
        # ids, rotary tables) are left unfilled by the meta-device load; rebuild the model normally with the weights.
        sys.path.insert(0, str(ROOT / "scripts/fixtures"))
        import make_architectures as fx

        loaded = st[0].model
        cls = type(loaded)
        if not hasattr(cls, "get_extended_attention_mask"):
            cls.get_extended_attention_mask = fx.transformers4_extended_attention_mask
        fresh = cls(loaded.config, add_pooling_layer=False)
        fresh.load_state_dict(loaded.state_dict(), strict=False)
        st[0].model = fresh.eval()
    st.encode(TEXTS, batch_size=32)
    times = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        st.encode(TEXTS, batch_size=32)
        times.append(time.perf_counter() - t)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"throughput": 32 / times[len(times) // 2], "batch_ms": 1e3 * times[len(times) // 2],
                      "peak_rss_mb": rss, "runs": len(times)}))


def run_rust(exe, folder, export, seconds, threads):
    cmd = [str(exe), "--model", str(folder), "--seconds", str(seconds), "--threads", str(threads), "--json"]
    if export:
        cmd += ["--torch-export", str(export)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


def run_st(folder, seconds, threads, remote):
    cmd = [sys.executable, __file__, "st-worker", "--model", str(folder), "--seconds", str(seconds),
           "--threads", str(threads)] + (["--code-fix"] if remote else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "st-worker":
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("--model")
        ap.add_argument("--seconds", type=float)
        ap.add_argument("--threads", type=int)
        ap.add_argument("--code-fix", action="store_true")
        return st_worker(ap.parse_args())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="*", default=["xlm-roberta", "gte", "nomic-bert", "modernbert", "qwen3"])
    ap.add_argument("--gte-code")
    ap.add_argument("--nomic-code")
    ap.add_argument("--seconds", type=float, default=6.0, help="per row and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--qwen3-rounds", type=int, help="rounds for the 0.6B decoder (default: --rounds)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="tiny configs, short rounds (checks the script)")
    ap.add_argument("--keep", help="keep the generated models in this folder")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 1.0), 1

    subprocess.run(["cargo", "build", "--release", "-p", "bulkhead-graph", "--example", "graph_bench"], cwd=ROOT,
                   check=True)
    exe = ROOT / "target/release/examples/graph_bench"
    cfgs = configs(args.quick)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="arch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.archs:
        code = None
        if name == "gte":
            if not args.gte_code:
                print("gte: skipped (no --gte-code)", file=sys.stderr)
                continue
            code = (args.gte_code, ["configuration.py", "modeling.py"],
                    {"AutoConfig": "configuration.NewConfig", "AutoModel": "modeling.NewModel"})
        if name == "nomic-bert":
            if not args.nomic_code:
                print("nomic-bert: skipped (no --nomic-code)", file=sys.stderr)
                continue
            code = (args.nomic_code, ["configuration_hf_nomic_bert.py", "modeling_hf_nomic_bert.py"],
                    {"AutoConfig": "configuration_hf_nomic_bert.NomicBertConfig",
                     "AutoModel": "modeling_hf_nomic_bert.NomicBertModel"})
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        print(f"{name}: generating the model", file=sys.stderr)
        model = make_model(name, cfgs[name], code[0] if code else None)
        save_folder(name, model, folder, code)
        export_dir = work / f"{name}-torch"
        shutil.rmtree(export_dir, ignore_errors=True)
        export_dir.mkdir()
        export = export_dir / "model.onnx"
        print(f"{name}: torch.onnx.export", file=sys.stderr)
        export_error = torch_export(name, model, export)
        if export_error:
            print(f"{name}: torch export failed: {export_error}", file=sys.stderr)
            export = None
        del model
        rust_rounds, st_rounds = [], []
        rounds = args.qwen3_rounds if name == "qwen3" and args.qwen3_rounds else args.rounds
        for r in range(rounds):
            rust, table = run_rust(exe, folder, export, args.seconds, args.threads)
            rust_rounds.append(rust)
            st_rounds.append(run_st(folder, args.seconds, args.threads, code is not None))
            print(table, file=sys.stderr)
        results.append((name, rust_rounds, st_rounds, export_error))
        # Each architecture's results as soon as they are measured (a long run can be cut short).
        print(json.dumps({"arch": name, "rust": rust_rounds, "st": st_rounds, "export_error": export_error}),
              file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(export_dir, ignore_errors=True)
    report(results, args)


def report(results, args):
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.threads} threads; "
          f"{args.rounds} rounds of {args.seconds:.0f} s per row; batch of 32 sentences")
    print()
    print("| model | built graph sent/s | torch export sent/s | built / torch (>= 0.95) | sentence-transformers "
          "sent/s | built / ST (>= 1.3) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rust, st, err in results:
        built = [r["rows"]["built"]["throughput"] for r in rust]
        torch = [r["rows"]["torch"]["throughput"] for r in rust if "torch" in r["rows"]]
        st_tp = [s["throughput"] for s in st]
        vs_torch = median([r["ratios"]["built_over_torch"] for r in rust if "built_over_torch" in r["ratios"]] or [0])
        vs_st = median([b / s for b, s in zip(built, st_tp)])
        torch_cell = f"{median(torch):.1f}" if torch else f"export failed ({err[:60]}...)"
        print(f"| {name} | {median(built):.1f} | {torch_cell} | {vs_torch:.2f}x | {median(st_tp):.1f} | "
              f"{vs_st:.2f}x |")
    for name, rust, st, _ in results:
        if name != "qwen3":
            continue
        b = rust[-1]["rows"]["built"]
        s = st[-1]
        print()
        print("| Qwen3-Embedding-0.6B config, batch 32 | built graph (ort:cpu) | sentence-transformers |")
        print("|---|---:|---:|")
        print(f"| batch latency p50 | {median([r['rows']['built']['batch_ms'] for r in rust]):.0f} ms | "
              f"{median([x['batch_ms'] for x in st]):.0f} ms |")
        print(f"| tokens/s | {median([r['rows']['built']['tokens_per_s'] for r in rust]):.0f} | "
              f"{median([x['throughput'] for x in st]) * b['tokens_per_s'] / b['throughput']:.0f} |")
        print(f"| peak resident memory | {b['peak_rss_mb']:.0f} MiB | {s['peak_rss_mb']:.0f} MiB |")


if __name__ == "__main__":
    main()
