#!/usr/bin/env python3
"""Image-embedding speed: the CLIP ViT-B/32 and SigLIP base vision towers bulkhead builds (ONNX Runtime CPU) against
transformers (torch, CPU) and fastembed (ONNX Runtime through its own Python pipeline), side by side in one run, plus
the share of bulkhead's time per image spent decoding and preprocessing it (bulkhead-image).

Models (random weights, real configs, written to a temporary folder, never committed):
  * CLIP ViT-B/32: clip-vit-base-patch32's config (vision 12 x 768, 224 px in 32 px patches; projection 512).
  * SigLIP base: siglip-base-patch16-224's config (transformers' `SiglipConfig()` defaults: vision 12 x 768, 224 px
    in 16 px patches).

Engines, all with THREADS intra-op threads, fed random pixel values of the real shape (the towers' time does not
depend on them), interleaved round by round so that background load hits them alike:
  * bulkhead: the `tower_bench` example (crates/bulkhead-graph/examples/tower_bench.rs), ms per image (median run);
  * transformers: `get_image_features(pixel_values=...)` under `torch.inference_mode()`;
  * fastembed (CLIP only: fastembed has no SigLIP image model): fastembed loads a local model folder with
    `ImageEmbedding("Qdrant/clip-ViT-B-32-vision", specific_model_path=DIR)` (no download), so the same weights are
    exported to DIR/model.onnx (the projected image features, `torch.onnx.export`, the layout of fastembed's own
    Qdrant/clip-ViT-B-32-vision: pixel_values in, image_embeds out) with CLIP's preprocessor_config.json. Two columns:
    its ONNX Runtime session on the pixel tensor (model time, comparable to the other two), and `embed()` on decoded
    PIL images (its preprocessing + model + normalisation, end to end).

Images/s = 1000 / ms per image. The decode + preprocess share comes from the `speed` example of bulkhead-image
(one thread, medians of 15 runs, over the committed fixture photos): share = (decode + preprocess) / (decode +
preprocess + tower ms per image at that batch), for the fixture's photo.jpg (333x517) and large.jpg (1280x960).

  /work/fixture-venv/bin/python scripts/bench/image_embed_bench.py [--models clip siglip] [--batches 1 32]
      [--threads 2] [--rounds 2] [--seconds 3] [--prebuilt]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests/fixtures/vision/images"


def make_model(kind, folder):
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    if kind == "clip":
        config = CLIPConfig(
            text_config=dict(eos_token_id=2),  # every other field: clip-vit-base-patch32's (transformers' defaults)
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=224, patch_size=32),
            projection_dim=512,
        )
        model = CLIPModel(config)
    else:
        model = SiglipModel(SiglipConfig())  # siglip-base-patch16-224's config
    model.eval().save_pretrained(folder)
    return model


def features(model, pixel_values):
    """The projected image embedding (transformers 5 returns an output object whose pooler_output it is)."""
    out = model.get_image_features(pixel_values=pixel_values)
    return out if hasattr(out, "shape") else out.pooler_output


def export_fastembed(model, out):
    """CLIP's vision tower with its projection as fastembed's Qdrant/clip-ViT-B-32-vision lays it out."""
    import torch

    out.mkdir()

    class Embeds(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return features(self.m, pixel_values)

    with torch.no_grad():
        torch.onnx.export(Embeds(model), (torch.zeros(1, 3, 224, 224),), str(out / "model.onnx"),
                          input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    # The committed CLIP processor config, with the size fields in the dictionary form fastembed reads.
    config = json.loads((IMAGES / "configs/clip.json").read_text())
    config.update(size={"shortest_edge": config["size"]}, crop_size={"height": config["crop_size"],
                                                                    "width": config["crop_size"]})
    (out / "preprocessor_config.json").write_text(json.dumps(config))


def pixels(batch, size):
    import torch

    g = torch.Generator().manual_seed(batch)
    return torch.rand((batch, 3, size, size), generator=g) * 4 - 2


def timed(fn, warmup, min_runs, seconds, batch):
    for _ in range(warmup):
        fn()
    runs, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(runs) < min_runs:
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1e3 / batch)
    return statistics.median(runs)


def torch_ms(model, batch, threads, plan):
    import torch

    torch.set_num_threads(threads)
    x = pixels(batch, 224)
    with torch.inference_mode():
        return timed(lambda: features(model, x), *plan, batch)


def fastembed_ms(fe, batch, plan, photo):
    session = fe.model.model
    x = pixels(batch, 224).numpy()
    graph = timed(lambda: session.run(None, {"pixel_values": x}), *plan, batch)
    images = [photo] * batch
    e2e = timed(lambda: list(fe.embed(images, batch_size=batch)), *plan, batch)
    return graph, e2e


def bulkhead_ms(binary, folder, batch, threads, plan):
    warmup, min_runs, seconds = plan
    out = subprocess.run(
        [binary, "--model", str(folder), "--batch", str(batch), "--threads", str(threads), "--seconds",
         str(seconds), "--warmup", str(warmup), "--min-runs", str(min_runs), "--json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])["ms_per_image_p50"]


def cargo_example(package, name, prebuilt):
    if prebuilt:
        path = ROOT / "target/release/examples" / name
        if not path.is_file():
            sys.exit(f"--prebuilt: {path} is missing; build it with cargo build --release --example {name}")
        return str(path)
    out = subprocess.run(["cargo", "build", "-q", "--release", "-p", package, "--example", name,
                          "--message-format=json"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == name:
            return msg["executable"]
    sys.exit(f"cargo built no {name} executable")


def preprocess_ms(binary):
    """bulkhead-image's decode + preprocess ms of photo.jpg (333x517) and large.jpg (1280x960), per processor."""
    out = subprocess.run([binary], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    totals = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ("clip", "siglip") and cells[1].startswith(("photo.jpg", "large.jpg")):
            totals.setdefault(cells[0], {})[cells[1].split()[0]] = float(cells[4])
    return totals, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["clip", "siglip"], choices=["clip", "siglip"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--prebuilt", action="store_true",
                    help="run target/release/examples/{tower_bench,speed} as they are instead of building them")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    tower = cargo_example("bulkhead-graph", "tower_bench", args.prebuilt)
    speed = cargo_example("bulkhead-image", "speed", args.prebuilt)
    load_before = os.getloadavg()
    pre, speed_out = preprocess_ms(speed)
    print(speed_out, file=sys.stderr)
    from PIL import Image

    photo = Image.open(IMAGES / "photo.jpg").convert("RGB")
    rows = []
    for kind in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / kind
            model = make_model(kind, folder)
            fe = None
            if kind == "clip":
                from fastembed import ImageEmbedding

                export_fastembed(model, Path(tmp) / "fastembed")
                fe = ImageEmbedding("Qdrant/clip-ViT-B-32-vision", specific_model_path=str(Path(tmp) / "fastembed"),
                                    threads=args.threads)
            for batch in args.batches:
                # Batch 32 of a 224 px ViT takes seconds per run here: one warm-up and two runs suffice.
                plan = (1, 2, args.seconds) if batch > 8 else (2, 5, args.seconds)
                ours, theirs, fg, fe2e = [], [], [], []
                for r in range(args.rounds):
                    ours.append(bulkhead_ms(tower, folder, batch, args.threads, plan))
                    theirs.append(torch_ms(model, batch, args.threads, plan))
                    if fe is not None:
                        g, e = fastembed_ms(fe, batch, plan, photo)
                        fg.append(g)
                        fe2e.append(e)
                    print(f"{kind} batch {batch} round {r + 1}: bulkhead {ours[-1]:.1f}, torch {theirs[-1]:.1f}, "
                          f"fastembed {fg[-1] if fg else float('nan'):.1f} / {fe2e[-1] if fe2e else float('nan'):.1f}"
                          f" ms/image", file=sys.stderr, flush=True)
                med = statistics.median
                rows.append((kind, batch, med(ours), med(theirs), med(fg) if fg else None, med(fe2e) if fe2e else None))
            del model, fe
    load_after = os.getloadavg()

    print(f"\nVision towers, random weights with real configs, CPU, {args.threads} threads each, {args.rounds} "
          f"interleaved rounds (median), load average {load_before[0]:.1f} before / {load_after[0]:.1f} after "
          f"(1-min), {os.cpu_count()} cores\n")
    print("| model | batch | bulkhead ort:cpu img/s | transformers torch img/s | fastembed session img/s "
          "| fastembed embed() img/s | bulkhead / torch | bulkhead / fastembed session "
          "| decode+preprocess share, photo.jpg 333x517 / large.jpg 1280x960 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, batch, o, t, g, e in rows:
        share = lambda name: (lambda p: f"{p / (p + o) * 100:.1f}%")(pre.get(kind, {}).get(name, float("nan")))
        name = {"clip": "CLIP ViT-B/32", "siglip": "SigLIP base/16 224"}[kind]
        fmt = lambda v: "–" if v is None else f"{1000 / v:.1f}"
        ratio = "–" if g is None else f"{g / o:.2f}x"
        print(f"| {name} | {batch} | {1000 / o:.1f} | {1000 / t:.1f} | {fmt(g)} | {fmt(e)} | {t / o:.2f}x | {ratio} "
              f"| {share('photo.jpg')} / {share('large.jpg')} |")
    print("\nbulkhead-image decode + preprocess ms per fixture photo (one thread):",
          "; ".join(f"{k}: " + ", ".join(f"{n} {ms:.1f}" for n, ms in v.items()) for k, v in pre.items()))


if __name__ == "__main__":
    main()
