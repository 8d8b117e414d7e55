#!/usr/bin/env python3
"""ONNX Runtime's own dynamic quantization of all-MiniLM-L6-v2, the baseline for `bulkhead quantize`.

Quantizes the fp32 torch export with `onnxruntime.quantization.quantize_dynamic` in four variants (per-tensor,
per-channel, per-channel MatMul only, per-channel reduce_range), then measures, side by side in one process with
interleaved rounds: batch-32 throughput relative to fp32 and the cosine of each text's embedding against fp32 on a
held-out set of varied texts (mean pooling + L2, as sentence-transformers). Writes the quantized models to OUT_DIR
(the Rust benchmark `quantize_bench` reads them for its own side-by-side table) and prints one table.

Usage: ort_quantize_baseline.py FP32_ONNX TOKENIZER_JSON TEXTS_FILE OUT_DIR [--seconds S] [--threads N]
Needs onnxruntime, onnx, numpy and tokenizers (the fixture venv has them).
"""
import argparse
import os
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer


def variants():
    return [
        ("int8 per-tensor", dict(per_channel=False)),
        ("int8 per-channel", dict(per_channel=True)),
        ("int8 per-channel, MatMul only", dict(per_channel=True, op_types_to_quantize=["MatMul"])),
        ("int8 per-channel, reduce_range", dict(per_channel=True, reduce_range=True)),
    ]


def encode(tok, texts):
    encs = tok.encode_batch(texts)
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(texts), n), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def embed(sess, feeds):
    names = {i.name for i in sess.get_inputs()}
    out = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    m = feeds["attention_mask"][..., None].astype(np.float32)
    v = (out * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32")
    ap.add_argument("tokenizer")
    ap.add_argument("texts")
    ap.add_argument("out_dir")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    tok = Tokenizer.from_file(a.tokenizer)
    tok.enable_truncation(256)
    texts = [t for t in open(a.texts, encoding="utf-8").read().splitlines() if t.strip()]
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    models = [("fp32", a.fp32)]
    for name, kw in variants():
        path = os.path.join(a.out_dir, name.replace(" ", "_").replace(",", "").replace("-", "_") + ".onnx")
        if not os.path.exists(path):
            quantize_dynamic(a.fp32, path, weight_type=QuantType.QInt8, **kw)
        models.append((name, path))
    sessions = [(n, ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])) for n, p in models]
    ref = np.concatenate([embed(sessions[0][1], encode(tok, texts[i : i + 32])) for i in range(0, len(texts), 32)])
    # Throughput: batch 32 of the held-out texts (the first 32), interleaved rounds.
    feeds = encode(tok, (texts * 2)[:32])
    rate = {n: [] for n, _ in sessions}
    for _ in range(a.rounds):
        for n, s in sessions:
            embed(s, feeds)
            t0, k = time.perf_counter(), 0
            while time.perf_counter() - t0 < a.seconds:
                embed(s, feeds)
                k += 1
            rate[n].append(32 * k / (time.perf_counter() - t0))
    base = np.median(rate["fp32"])
    print(f"load average: {os.getloadavg()}")
    print(f"| variant | throughput vs fp32 (median of {a.rounds}) | texts/s | min cosine | mean cosine |")
    print("|---|---|---|---|---|")
    for n, s in sessions:
        got = np.concatenate([embed(s, encode(tok, texts[i : i + 32])) for i in range(0, len(texts), 32)])
        cos = (got * ref).sum(1)
        r = np.median(rate[n])
        print(f"| {n} | {r / base:.2f}x | {r:.0f} | {cos.min():.4f} | {cos.mean():.4f} |")


if __name__ == "__main__":
    main()
