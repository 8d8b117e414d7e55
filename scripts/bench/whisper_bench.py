#!/usr/bin/env python3
"""Whisper speed, bulkhead (ort:cpu) against transformers (torch, CPU), on a random-weight folder with whisper-base's
real config (d_model 512, 6 + 6 layers, 8 heads, feed-forward 2048, 51865 tokens, 80 mel bins, 1500 / 448
positions), fp32.

Builds the folder in a temporary directory (weights normal with std 0.02 as transformers initialises them, the
end-of-text row zeroed and the timestamps suppressed so that every round decodes the same number of tokens in one
window; the tokenizer and feature settings are
the committed fixture's, the generation config has whisper-base's token layout), times transformers' encoder and
`generate(language="en", max_new_tokens=TOKENS)` (greedy), runs `cargo run -p bulkhead-speech --example
whisper_bench` on the same folder, and prints one table: encoder seconds of audio per second (one 30 s window per
run) and decoder tokens per second (the generate time less one encoder run). Medians of ROUNDS rounds after a
warm-up; both sides use their default thread count (all cores).

  /work/fixture-venv/bin/python scripts/bench/whisper_bench.py [--tokens 100] [--rounds 3] [--release]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/speech/whisper-tiny-random"


def base_folder(out: Path):
    config = WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258, pad_token_id=50257,
        bos_token_id=50257, eos_token_id=50257,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[50257] = 0
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257, max_length=448,
        no_timestamps_token_id=50363, prev_sot_token_id=50361, begin_suppress_tokens=[220, 50257],
        is_multilingual=True, lang_to_id={"<|en|>": 50259}, task_to_id={"transcribe": 50359, "translate": 50358},
        # No timestamp tokens: every round decodes one window.
        suppress_tokens=list(range(50364, 51865)),
    )
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(FIXTURE / f, out / f)
    return model


def features():
    i = torch.arange(80 * 3000)
    return (((i * 7919) % 1000).float() / 1000.0 - 0.5).reshape(1, 80, 3000)


def torch_times(model, tokens, rounds):
    x = features()
    with torch.no_grad():
        model.model.encoder(x)
        model.generate(x, language="en", max_new_tokens=4)
        enc, gen, n = [], [], 0
        for _ in range(rounds):
            t = time.perf_counter()
            model.model.encoder(x)
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = model.generate(x, language="en", max_new_tokens=tokens)
            gen.append(time.perf_counter() - t)
            n = out.shape[-1]
    e = statistics.median(enc)
    d = statistics.median(gen) - e
    return dict(engine=f"transformers {transformers.__version__} (torch {torch.__version__}, cpu)", encoder_s=e,
                encoder_audio_s_per_s=30.0 / e, tokens=n, decode_s=d, tokens_per_s=n / d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--release", action="store_true", help="build the example with --release")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "whisper-base-random"
        model = base_folder(folder)
        rows = [torch_times(model, args.tokens, args.rounds)]
        cmd = ["cargo", "run", "-q", "-p", "bulkhead-speech", "--example", "whisper_bench"]
        cmd += ["--release"] if args.release else []
        cmd += ["--", str(folder), str(args.tokens), str(args.rounds)]
        out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"whisper-base config, random weights, fp32, {args.tokens} tokens, median of {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads (torch)")
    print(f"| engine | encoder s / 30 s window | encoder audio s/s | tokens | decoder tokens/s |")
    print(f"|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['encoder_s']:.3f} | {r['encoder_audio_s_per_s']:.1f} | {r['tokens']} | "
              f"{r['tokens_per_s']:.1f} |")
    b, t = rows[1], rows[0]
    print(f"bulkhead / transformers: encoder {b['encoder_audio_s_per_s'] / t['encoder_audio_s_per_s']:.2f}x, "
          f"decoder {b['tokens_per_s'] / t['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
