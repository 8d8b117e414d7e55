#!/usr/bin/env python3
"""Whisper speed and memory, bulkhead (ort:cpu) against transformers (torch, CPU) and faster-whisper (CTranslate2,
float32 and int8), on one random-weight folder with whisper-base's real config (d_model 512, 6 + 6 layers, 8 heads,
feed-forward 2048, 51865 tokens, 80 mel bins, 1500 / 448 positions).

Builds the folder in a temporary directory (weights normal with std 0.02 as transformers initialises them, the
end-of-text row zeroed and the timestamps suppressed so that every round decodes the same number of tokens in one
window; the tokenizer and feature settings are the committed fixture's, the generation config has whisper-base's token
layout) and converts it with CTranslate2's transformers converter (`TransformersConverter`, float32; the int8 row
loads the same conversion with `compute_type="int8"`, which quantizes the weights at load as faster-whisper does).

Each engine runs in its own process (so that its peak resident memory, its VmHWM polled every 50 ms, is its own:
the interpreter, the library and the model) and the engines are interleaved: PASSES passes over all engines, each
pass loading the model afresh and timing ROUNDS rounds after a warm-up. All engines get THREADS intra-op threads and
the same features (a fixed deterministic pattern, 80 x 3000: one 30 s window):

  * bulkhead: `crates/bulkhead-speech/examples/whisper_bench.rs` (`WhisperModel` on `ort:cpu`, greedy, language en):
    encoder = `encode`; decoder = `transcribe` less one encoder run.
  * transformers: `model.model.encoder(x)`; decoder = `generate(x, language="en", max_new_tokens=TOKENS)` (greedy)
    less one encoder run.
  * faster-whisper: the `ctranslate2.models.Whisper` that `faster_whisper.WhisperModel` wraps (its `.model`):
    encoder = `encode(x)`; decoder = `generate(encoder_output, [[<|startoftranscript|>, <|en|>, <|transcribe|>,
    <|notimestamps|>]], beam_size=1, max_length=...)`, the call faster-whisper's `transcribe` makes per window,
    without its Python segment logic. End-of-text (50257) and the timestamps are in `suppress_tokens`, so it never
    stops early; CTranslate2 generates at most `max_length / 2` new tokens (half the context, as openai-whisper's
    `sample_len`), so `max_length` is 2 x TOKENS; the tokens generated are counted and shown.

Tokens per second = tokens generated / decoder seconds (each engine's own count is printed). Medians over rounds and
passes. Prints one markdown table, the ratios to bulkhead, and the load average before and after.

  /work/fixture-venv/bin/python scripts/bench/whisper_bench.py [--tokens 100] [--rounds 3] [--passes 2]
      [--threads 2] [--debug] [--prebuilt]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/speech/whisper-tiny-random"
PROMPT = [50258, 50259, 50359, 50363]  # <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>
SUPPRESS = [50257] + list(range(50364, 51865))  # end-of-text and the timestamps


def base_folder(out: Path):
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

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


def ct2_vocabulary(ct2: Path):
    """CTranslate2 finds the special tokens by their text in `vocabulary.json`, which the converter writes from the
    fixture's small tokenizer (512 ordinary tokens, then the 1608 special ones in whisper's order). Whisper-base puts
    the same special tokens after 50257 ordinary ones: keep them in order at those ids, ordinary ones as placeholders.
    """
    vocab = json.loads((ct2 / "vocabulary.json").read_text())
    special = vocab[512:512 + 1608]
    assert special[0] == "<|endoftext|>" and special[-1] == "<|30.00|>", special[:2] + special[-1:]
    vocab = [f"<|ordinary {i}|>" for i in range(50257)] + special
    assert len(vocab) == 51865 and vocab[PROMPT[0]] == "<|startoftranscript|>" and vocab[PROMPT[3]] == "<|notimestamps|>"
    (ct2 / "vocabulary.json").write_text(json.dumps(vocab))


def features_list():
    return [[(((m * 3000 + f) * 7919) % 1000) / 1000.0 - 0.5 for f in range(3000)] for m in range(80)]


def worker_torch(folder, tokens, rounds, threads):
    import torch
    import transformers
    from transformers import WhisperForConditionalGeneration

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    x = torch.tensor(features_list()).reshape(1, 80, 3000)
    with torch.inference_mode():
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
            # `generate` may return the forced prompt tokens too; count the new ones only.
            seq = out[0].tolist()
            n = len(seq) - (len(PROMPT) if seq[:len(PROMPT)] == PROMPT else 0)
    return dict(engine=f"transformers {transformers.__version__} (torch {torch.__version__})", enc=enc, gen=gen,
                tokens=n)


def worker_ct2(folder, tokens, rounds, threads, compute):
    import ctranslate2
    import faster_whisper

    fw = faster_whisper.WhisperModel(str(folder), device="cpu", compute_type=compute, cpu_threads=threads)
    model = fw.model
    x = ctranslate2.StorageView.from_array(__import__("numpy").array(features_list(), dtype="float32")[None])

    def generate(encoded, n):
        # CTranslate2's Whisper generates at most max_length / 2 new tokens (half the 448-position context, as
        # openai-whisper's sample_len), measured: max_length 200 gives 100 tokens. The count is returned and shown.
        r = model.generate(encoded, [PROMPT], beam_size=1, max_length=2 * n, suppress_tokens=SUPPRESS,
                           suppress_blank=True)
        return len(r[0].sequences_ids[0])

    generate(model.encode(x), 4)
    enc, gen, n = [], [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        encoded = model.encode(x)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        n = generate(encoded, tokens)
        gen.append(time.perf_counter() - t)
    # `generate` here starts from the encoder output, so its time is already the decoder's alone.
    gen = [g + e for g, e in zip(gen, enc)]
    return dict(engine=f"faster-whisper {faster_whisper.__version__} (CTranslate2 {ctranslate2.__version__}, "
                       f"{compute})", enc=enc, gen=gen, tokens=n)


def run_measured(cmd):
    """Runs `cmd`, returns (its last stdout line as JSON, its peak resident memory in MiB).

    The peak is the child's own VmHWM, polled from /proc every 50 ms until it exits (`wait4`'s ru_maxrss would not
    do: Linux carries a parent's peak over fork and exec, and this parent holds the torch model it built).
    """
    import threading

    peak = [0]

    def poll(pid):
        while True:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.05)

    with tempfile.TemporaryFile("w+") as errf:
        p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=errf, text=True)
        watcher = threading.Thread(target=poll, args=(p.pid,), daemon=True)
        watcher.start()
        out = p.stdout.read()
        p.wait()
        errf.seek(0)
        err = errf.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0] / 1024


def bulkhead_binary(release, prebuilt):
    if prebuilt:
        path = REPO / "target" / ("release" if release else "debug") / "examples/whisper_bench"
        if not path.is_file():
            sys.exit(f"--prebuilt: {path} is missing; build it with cargo build --example whisper_bench")
        return str(path)
    cmd = ["cargo", "build", "-q", "-p", "bulkhead-speech", "--example", "whisper_bench", "--message-format=json"]
    cmd += [] if not release else ["--release"]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "whisper_bench":
            return msg["executable"]
    sys.exit("cargo built no whisper_bench executable")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=2, help="interleaved passes over all engines")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--debug", action="store_true", help="time a debug build of the example (default: release)")
    ap.add_argument("--prebuilt", action="store_true", help="run target/*/examples/whisper_bench as it is")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--folder-only", metavar="OUT", type=Path,
                    help="only write the whisper-base random-weight folder to OUT (for bulkhead-candle's "
                         "whisper_speed example: candle:cpu beside ort:cpu) and exit")
    args = ap.parse_args()
    if args.folder_only:
        base_folder(args.folder_only)
        print(args.folder_only)
        return
    if args.worker:
        engine, folder = args.worker
        if engine == "torch":
            r = worker_torch(folder, args.tokens, args.rounds, args.threads)
        else:
            r = worker_ct2(folder, args.tokens, args.rounds, args.threads, engine.split(":")[1])
        print(json.dumps(r))
        return

    binary = bulkhead_binary(not args.debug, args.prebuilt)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "whisper-base-random"
        ct2 = Path(tmp) / "whisper-base-random-ct2"
        base_folder(folder)
        import ctranslate2.converters

        # faster-whisper reads the tokenizer and the feature settings from the converted folder.
        ctranslate2.converters.TransformersConverter(
            str(folder), copy_files=["tokenizer.json", "preprocessor_config.json"]
        ).convert(str(ct2), quantization="float32")
        ct2_vocabulary(ct2)
        me = [sys.executable, __file__, "--tokens", str(args.tokens), "--rounds", str(args.rounds),
              "--threads", str(args.threads), "--worker"]
        engines = {
            "bulkhead": [binary, str(folder), str(args.tokens), str(args.rounds), str(args.threads)],
            "torch": me + ["torch", str(folder)],
            "ct2:float32": me + ["ct2:float32", str(ct2)],
            "ct2:int8": me + ["ct2:int8", str(ct2)],
        }
        runs = {k: [] for k in engines}
        for p in range(args.passes):
            for key, cmd in engines.items():
                r, rss = run_measured(cmd)
                r["rss"] = rss
                runs[key].append(r)
                print(f"pass {p + 1} {key}: {json.dumps(r)}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    rows = []
    for key, rs in runs.items():
        if key == "bulkhead":
            enc = statistics.median(r["encoder_s"] for r in rs)
            # Under heavy load a pass's transcription can come out quicker than its lone encoder run (the example
            # then clamps the difference to ~0): such passes say nothing about the decoder and are left out.
            kept = [r["decode_s"] for r in rs if r["decode_s"] > 1e-6] or [float("nan")]
            dec = statistics.median(kept)
            name, tokens = f"bulkhead ort:cpu ({'release' if not args.debug else 'debug'})", rs[-1]["tokens"]
        else:
            enc = statistics.median(e for r in rs for e in r["enc"])
            dec = statistics.median(g for r in rs for g in r["gen"]) - enc
            name, tokens = rs[-1]["engine"], rs[-1]["tokens"]
        rows.append(dict(key=key, name=name, enc=enc, tokens=tokens, tps=tokens / dec,
                         rss=statistics.median(r["rss"] for r in rs)))
    print(f"whisper-base config, random weights, fp32 weights (int8: CTranslate2's load-time quantization), "
          f"{args.threads} threads each, {args.tokens} tokens, median of {args.rounds} rounds x {args.passes} "
          f"interleaved passes; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"(1-min), {os.cpu_count()} cores")
    print()
    print("| engine | encoder s / 30 s window | encoder audio s/s | tokens | decoder tokens/s | peak RSS MiB "
          "| encoder speed / bulkhead's | decoder speed / bulkhead's |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    b = rows[0]
    for r in rows:
        print(f"| {r['name']} | {r['enc']:.3f} | {30.0 / r['enc']:.1f} | {r['tokens']} | {r['tps']:.1f} | "
              f"{r['rss']:.0f} | {b['enc'] / r['enc']:.2f}x | {r['tps'] / b['tps']:.2f}x |")


if __name__ == "__main__":
    main()
