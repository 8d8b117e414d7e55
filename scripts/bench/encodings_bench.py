#!/usr/bin/env python3
"""What the output encodings of `/v1/embeddings` cost and save: for N texts in one request, each `encoding_format`
(`float`, `base64`, `int8`, `uint8`, `binary`, `ubinary`) is requested in alternating rounds from a running
`bulkhead serve`, and the script prints one markdown table with, per encoding, the response size, the median
wall time of the request, the median time outside the model's stages (wall time less the `Server-Timing`
tokenize/queue/infer/post durations: writing the body, sending and receiving it) and the median time the client
takes to parse the body (`json.loads`, plus decoding for base64).

  python3 scripts/bench/encodings_bench.py [--url http://127.0.0.1:8080] [--texts 1000] [--rounds 5] [--model NAME]

Standard library only. Start the server first (`bulkhead serve --compute-units ort:cpu`); the load average is
printed with the table, because a busy machine moves every number.
"""

import argparse
import base64
import json
import os
import statistics
import time
import urllib.request

FORMATS = ["float", "base64", "int8", "uint8", "binary", "ubinary"]


def texts(n):
    words = "the quick brown fox jumps over a lazy dog near river bank at dawn while birds sing softly".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 9)) + f" #{i}" for i in range(n)]


def server_timing(header):
    total = 0.0
    for part in header.split(","):
        for field in part.split(";"):
            if field.strip().startswith("dur="):
                total += float(field.strip()[4:])
    return total


def one(url, body):
    req = urllib.request.Request(url + "/v1/embeddings", data=body, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        raw = resp.read()
        timing = resp.headers.get("server-timing", "")
    wall = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    doc = json.loads(raw)
    for d in doc["data"]:
        if isinstance(d["embedding"], str):
            base64.b64decode(d["embedding"])
    parse = (time.perf_counter() - t1) * 1e3
    return len(raw), wall, wall - server_timing(timing), parse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model")
    args = ap.parse_args()

    inputs = texts(args.texts)
    bodies = {}
    for f in FORMATS:
        req = {"input": inputs, "encoding_format": f}
        if args.model:
            req["model"] = args.model
        bodies[f] = json.dumps(req).encode()
    one(args.url, bodies["float"])  # warm-up
    samples = {f: [] for f in FORMATS}
    for _ in range(args.rounds):
        for f in FORMATS:
            samples[f].append(one(args.url, bodies[f]))

    print(f"{args.texts} texts per request, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}\n")
    print("| encoding | response bytes | bytes vs float | wall ms (median) | outside the model ms (median) | client parse ms (median) |")
    print("|---|---|---|---|---|---|")
    float_bytes = samples["float"][0][0]
    for f in FORMATS:
        s = samples[f]
        size = s[0][0]
        med = lambda i: statistics.median(x[i] for x in s)  # noqa: E731
        print(f"| `{f}` | {size:,} | {size / float_bytes:.3f} | {med(1):.1f} | {med(2):.1f} | {med(3):.2f} |")


if __name__ == "__main__":
    main()
