"""Reference outputs for the compatibility routes' test, from the Python packages users compare against:

* tokens: the `tokenizers` package on the model's tokenizer.json (no truncation, no padding): ids, special-token
  mask, character offsets, and the decoded text;
* quantized embeddings: a numpy transcription of sentence-transformers' `quantize_embeddings`
  (sentence_transformers/util/quantization.py): int8/uint8 levels from per-dimension ranges (the embeddings' own
  minimum and maximum when no ranges are given), binary/ubinary from `np.packbits(embeddings > 0)`.

usage: references.py < request.json   (`{"tokenizer": PATH, "texts": [...], "vectors": [[...]], "ranges": [[...], [...]]}`)
Prints one JSON object.
"""

import json
import sys

import numpy as np
from tokenizers import Tokenizer

req = json.load(sys.stdin)

tok = Tokenizer.from_file(req["tokenizer"])
tok.no_truncation()
tok.no_padding()
tokens = []
for text in req["texts"]:
    e = tok.encode(text)
    plain = tok.encode(text, add_special_tokens=False)
    tokens.append(
        {
            "ids": e.ids,
            "special": e.special_tokens_mask,
            "offsets": [list(o) for o in e.offsets],
            "plain_ids": plain.ids,
            "decoded": tok.decode(e.ids),
            "decoded_with_special": tok.decode(e.ids, skip_special_tokens=False),
        }
    )


def quantize(embeddings, precision, ranges=None):
    """sentence-transformers' quantize_embeddings for a 2-D float array."""
    if precision in ("int8", "uint8"):
        if ranges is None:
            ranges = np.vstack((np.min(embeddings, axis=0), np.max(embeddings, axis=0)))
        ranges = ranges.astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    if precision == "binary":
        return (np.packbits(embeddings > 0, axis=-1) - 128).astype(np.int8)
    if precision == "ubinary":
        return np.packbits(embeddings > 0, axis=-1)
    raise ValueError(precision)


vectors = np.array(req["vectors"], dtype=np.float32)
given = np.array(req["ranges"], dtype=np.float32)
quantized = {p: quantize(vectors, p).tolist() for p in ("int8", "uint8", "binary", "ubinary")}
quantized["ranges"] = np.vstack((vectors.min(axis=0), vectors.max(axis=0))).tolist()
quantized["int8_given"] = quantize(vectors, "int8", given).tolist()
quantized["uint8_given"] = quantize(vectors, "uint8", given).tolist()
print(json.dumps({"tokens": tokens, "quantized": quantized}))
