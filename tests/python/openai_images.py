"""Calls a running bulkhead server with the official `openai` Python client: image embeddings of an image-text
model through `embeddings.create` (image content parts in `input`, mixed with texts; the client's default base64
encoding and `float`), checked against transformers' vectors for the same files (images.json and reference.json
of the fixture folder).

usage: openai_images.py BASE_URL MODEL FIXTURE_FOLDER
Exits 0 when every check passes; prints what it measured.
"""

import base64
import json
import pathlib
import sys

import numpy as np
from openai import OpenAI

base_url, model, folder = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
images = json.loads((folder / "images.json").read_text())
texts = json.loads((folder / "reference.json").read_text())
image_dir = folder.parent / "images"


def part(name):
    data = base64.b64encode((image_dir / name).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def check(label, got, expected):
    got, expected = np.asarray(got, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    cos = (got * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    print(f"{label}: min cosine {cos.min():.7f}")
    assert cos.min() >= 0.9999, (label, cos.min())


client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
names, want = images["images"], images["image_embeddings"]

# Image parts in `input` (the client passes them through; it asks for base64 and decodes it itself).
r = client.embeddings.create(model=model, input=[part(n) for n in names])
assert r.model == model and [d.index for d in r.data] == list(range(len(names)))
check("images (client default encoding)", [d.embedding for d in r.data], want)

# float encoding, texts and images mixed: each item to its own tower, in order.
r = client.embeddings.create(
    model=model,
    input=[{"type": "text", "text": texts["texts"][0]}, part(names[0]), {"type": "text", "text": texts["texts"][1]}],
    encoding_format="float",
)
check("mixed", [d.embedding for d in r.data], [texts["text_embeddings"][0], want[0], texts["text_embeddings"][1]])

# The same through extra_body (for client versions that check `input`'s type).
r = client.embeddings.create(model=model, input="", extra_body={"input": [part(names[1])]}, encoding_format="float")
check("extra_body", [r.data[0].embedding], [want[1]])

# A refusal is an openai error with the server's message.
try:
    client.embeddings.create(model=model, input=[{"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}}])
    raise SystemExit("an http URL was accepted without --allow-image-urls")
except Exception as e:  # openai.UnprocessableEntityError
    assert "--allow-image-urls" in str(e), e
    print("http URL refused:", type(e).__name__)
