#!/usr/bin/env python3
"""Latency of `POST /v1/segment` on a real `bulkhead serve`: the first prompt on an image (decode, resize, image
encoder, mask decoder), later prompts by `image_id` (mask decoder only), the same image resent (the server's cache:
no decoding, the worker's embedding), and a JSON vs multipart upload. Prints a Markdown table of wall-clock
latency (median and 90th percentile over the runs) and the median `Server-Timing` stages.

  python3 scripts/segment_bench.py [--binary target/release/bulkhead] [--model tests/fixtures/vision/sam2-tiny-random]
                                   [--image tests/fixtures/vision/sam2-tiny-random/image0.png] [--runs 30]

Each first-prompt run uses a distinct image (the picture with one pixel changed), so nothing is cached.
"""

import argparse
import base64
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib


def post(url: str, body: bytes, content_type: str) -> tuple[dict, dict]:
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        timing = {}
        for part in r.headers.get("server-timing", "").split(","):
            m = re.match(r"\s*(\w+);dur=([0-9.]+)", part)
            if m:
                timing[m.group(1)] = float(m.group(2))
        return json.loads(r.read()), timing


def variant(png: bytes, i: int) -> bytes:
    """The same PNG with an extra ancillary chunk: other bytes (another image_id), the same pixels."""
    chunk = b"tEXt" + f"bench\x00{i}".encode()
    extra = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:33] + extra + png[33:]


def multipart(fields: dict, image: bytes) -> tuple[bytes, str]:
    boundary = "segment-bench-boundary"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\ncontent-disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="i.png"\r\n\r\n'.encode()
    out += image + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/bulkhead")
    ap.add_argument("--model", default="tests/fixtures/vision/sam2-tiny-random")
    ap.add_argument("--image", default="tests/fixtures/vision/sam2-tiny-random/image0.png")
    ap.add_argument("--units", default="ort:cpu")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    png = open(args.image, "rb").read()
    state = tempfile.mkdtemp()
    env = dict(os.environ, BULKHEAD_STATE_DIR=state)
    server = subprocess.Popen(
        [args.binary, "serve", "--port", "0", "--model", args.model, "--compute-units", args.units],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        addr = None
        for line in server.stdout:
            if line.startswith("listening on "):
                addr = line.split()[-1]
                break
        if addr is None:
            sys.exit("the server did not start")
        url = addr + "/v1/segment"
        rows = {}

        def record(name, fn):
            walls, stages = [], {}
            for i in range(args.runs):
                t = time.perf_counter()
                _, timing = fn(i)
                walls.append((time.perf_counter() - t) * 1e3)
                for k, v in timing.items():
                    stages.setdefault(k, []).append(v)
            walls.sort()
            rows[name] = (statistics.median(walls), walls[int(0.9 * (len(walls) - 1))],
                          {k: statistics.median(v) for k, v in stages.items()})

        point = {"points": [[80, 75]], "multimask_output": True}
        as_json = lambda b: json.dumps({"image": base64.b64encode(b).decode(), **point}).encode()
        record("first prompt on a new image (JSON)", lambda i: post(url, as_json(variant(png, i)), "application/json"))
        first, _ = post(url, as_json(png), "application/json")
        by_id = json.dumps({"image_id": first["image_id"], **point}).encode()
        record("later prompt by image_id", lambda i: post(url, by_id, "application/json"))
        record("the same image resent (JSON)", lambda i: post(url, as_json(png), "application/json"))
        fields = {"points": "[[80, 75]]", "multimask_output": "true"}
        record("first prompt on a new image (multipart)",
               lambda i: post(url, *multipart(fields, variant(png, 10_000 + i))))
        stages = ["decode", "preprocess", "queue", "encode", "decode_masks", "infer", "post"]
        print(f"{args.model} on {args.units}, {args.runs} runs each (ms)\n")
        print("| request | median | p90 | " + " | ".join(stages) + " |")
        print("|---|---|---|" + "---|" * len(stages))
        for name, (med, p90, st) in rows.items():
            print(f"| {name} | {med:.2f} | {p90:.2f} | " + " | ".join(f"{st.get(s, 0):.2f}" for s in stages) + " |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
