#!/usr/bin/env python3
"""Speed of the CLIP vision tower graph bulkhead builds, against transformers (PyTorch) on the same weights, at the
real size of openai/clip-vit-base-patch32, on the CPU.

A random-weight CLIPModel with clip-vit-base-patch32's config (vision: 12 x 768, 224 px in 32 px patches; text:
12 x 512; projections to 512) is written to a temporary folder (about 600 MB, never committed). Then, in alternating
rounds so that background load hits both alike:

  * bulkhead: the `tower_bench` example (crates/bulkhead-graph/examples/tower_bench.rs) builds the vision tower
    graph from the folder and times it on ONNX Runtime CPU with the same thread count;
  * transformers: `CLIPModel.get_image_features` under `torch.inference_mode()` with `torch.set_num_threads`.

Both are fed random pixel values of the real shape; the time is per image (a batch's time divided by its size),
median over the runs of a round, then the median over rounds. The example spends its time inside
libonnxruntime, so its debug build measures the same as a release build. Prints one markdown table with the load
average.

  PYTHON scripts/bench/clip_bench.py [--batches 1 8] [--threads 2] [--seconds 5] [--rounds 2]

(PYTHON: a Python with torch and transformers, as the fixture scripts under scripts/fixtures/ need.)
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_model(folder):
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(eos_token_id=2),  # every other field: clip-vit-base-patch32's (transformers' defaults)
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32),
        projection_dim=512,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    model.eval()
    model.save_pretrained(folder)
    return model


def torch_ms(model, batch, threads, seconds):
    import torch

    torch.set_num_threads(threads)
    pixels = torch.rand((batch, 3, 224, 224)) * 4 - 2
    with torch.inference_mode():
        for _ in range(3):
            model.get_image_features(pixel_values=pixels)
        runs = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(runs) < 5:
            t = time.perf_counter()
            model.get_image_features(pixel_values=pixels)
            runs.append((time.perf_counter() - t) * 1e3 / batch)
    return statistics.median(runs)


def bulkhead_ms(folder, batch, threads, seconds):
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "bulkhead-graph", "--example", "tower_bench", "--", "--model", str(folder),
         "--batch", str(batch), "--threads", str(threads), "--seconds", str(seconds), "--json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip-vit-base-patch32-random"
        model = make_model(folder)
        rows = []
        for batch in args.batches:
            ours, theirs, build = [], [], []
            for _ in range(args.rounds):
                r = bulkhead_ms(folder, batch, args.threads, args.seconds)
                ours.append(r["ms_per_image_p50"])
                build.append((r["build_ms"], r["session_ms"]))
                theirs.append(torch_ms(model, batch, args.threads, args.seconds))
            o, t = statistics.median(ours), statistics.median(theirs)
            rows.append((batch, o, t, t / o, build[0]))
    load = os.getloadavg()
    print(f"\nCLIP ViT-B/32 vision tower (random weights, real config), CPU, {args.threads} threads, "
          f"{args.rounds} rounds x {args.seconds:g} s, load average {load[0]:.1f} / {load[1]:.1f}\n")
    print("| batch | bulkhead graph, ort:cpu (ms/image) | transformers, torch (ms/image) | speed-up "
          "| graph build / session (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for batch, o, t, ratio, (b, s) in rows:
        print(f"| {batch} | {o:.1f} | {t:.1f} | {ratio:.2f}x | {b:.0f} / {s:.0f} |")


if __name__ == "__main__":
    main()
