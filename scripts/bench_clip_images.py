#!/usr/bin/env python3
"""Image embeddings, bulkhead against transformers on the same machine: images per second at batch 32 and the
latency of one image, for a CLIP ViT-B/32-sized model (transformers' default CLIPConfig: 224-pixel images in 32-pixel
patches, 12 layers of 768 in the vision tower) with random weights (the speed does not depend on the values, and no
checkpoint is downloaded).

bulkhead: `bulkhead serve` on ort:cpu, JPEG files sent as data URLs to /v1/embeddings (decode, preprocess, queue,
infer and the HTTP round trip included). transformers: `CLIPImageProcessor` + `get_image_features` in torch on the
already-decoded PIL images (decoding excluded), `torch.no_grad`, torch's default threads.

usage: /work/fixture-venv/bin/python scripts/bench_clip_images.py [--bin target/release/bulkhead] [--rounds 5]
Prints a Markdown table.
"""

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "fixtures" / "vision" / "images"
FILES = ["photo.jpg", "progressive.jpg", "large.jpg", "exif_6.jpg"]


def make_model(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    tiny = ROOT / "tests" / "fixtures" / "vision" / "clip-tiny-random"
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / f, Path(folder) / f)
    return model


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def timed(rounds, fn):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "bulkhead"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from PIL import Image
    from transformers import CLIPImageProcessor

    work = Path(tempfile.mkdtemp())
    folder = work / "clip-b32-random"
    model = make_model(folder)
    blobs = [(IMAGES / FILES[i % len(FILES)]).read_bytes() for i in range(32)]
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b).decode()}}
        for b in blobs
    ]
    rows = []

    server = subprocess.Popen(
        [args.bin, "serve", "--port", "0", "--compute-units", "ort:cpu", "--model", f"clip={folder}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"BULKHEAD_CACHE_DIR": str(work / "cache"), "PATH": "/usr/bin:/bin"},
        text=True,
    )
    try:
        addr = None
        for line in server.stdout:
            if line.startswith("listening on "):
                addr = line.split()[-1]
                break
        assert addr, "the server did not start"
        url = f"{addr}/v1/embeddings"
        post(url, {"model": "clip", "input": parts})  # warm the batch shape
        one = timed(args.rounds * 4, lambda: post(url, {"model": "clip", "input": parts[:1]}))
        batch = timed(args.rounds, lambda: post(url, {"model": "clip", "input": parts}))
        rows.append(("bulkhead serve (ort:cpu, HTTP, decode included)", 32 / batch, one * 1e3))
    finally:
        server.terminate()
        server.wait()

    processor = CLIPImageProcessor.from_pretrained(folder)
    pil = [Image.open(IMAGES / FILES[i % len(FILES)]).convert("RGB") for i in range(32)]

    def torch_embed(images):
        with torch.no_grad():
            model.get_image_features(**processor(images=images, return_tensors="pt"))

    torch_embed(pil)
    one = timed(args.rounds * 4, lambda: torch_embed(pil[:1]))
    batch = timed(args.rounds, lambda: torch_embed(pil))
    rows.append((f"transformers {__import__('transformers').__version__} torch {torch.__version__} (decoded)", 32 / batch, one * 1e3))

    print(f"CLIP ViT-B/32 shape, random weights; {torch.get_num_threads()} torch threads; median of {args.rounds} batches")
    print("| runner | images/s at batch 32 | one image, ms |")
    print("|---|---:|---:|")
    for name, ips, ms in rows:
        print(f"| {name} | {ips:.1f} | {ms:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
