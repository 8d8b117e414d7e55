"""Calls a running bulkhead server with the official `openai` Python client and checks the embeddings against the
sentence-transformers reference (tests/fixtures/reference_embeddings.json).

usage: openai_client.py BASE_URL MODEL [API_KEY]
Exits 0 when every check passes; prints what it measured.
"""

import base64
import json
import pathlib
import sys

import numpy as np
from openai import OpenAI

base_url, model = sys.argv[1], sys.argv[2]
api_key = sys.argv[3] if len(sys.argv) > 3 else "unused"
ref = json.loads((pathlib.Path(__file__).parents[1] / "fixtures" / "reference_embeddings.json").read_text())
sentences, want = ref["sentences"], np.array(ref["embeddings"], dtype=np.float32)

client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def check(label, got, expected):
    got = np.asarray(got, dtype=np.float32)
    cos = (got * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    diff = np.abs(got - expected).max()
    print(f"{label}: min cosine {cos.min():.7f}, max abs diff {diff:.2e}")
    assert cos.min() >= 0.99999, (label, cos.min())


# A single string.
r = client.embeddings.create(model=model, input=sentences[3])
assert r.model == model and len(r.data) == 1 and r.usage.prompt_tokens > 0
check("string", [r.data[0].embedding], want[3:4])

# A list of strings (every reference sentence, including the empty one and the >256-token paragraph).
r = client.embeddings.create(model=model, input=sentences)
assert [d.index for d in r.data] == list(range(len(sentences)))
check("list", [d.embedding for d in r.data], want)

# base64: the client asks for base64 itself when numpy is present and decodes it; decode by hand via raw response.
raw = client.embeddings.with_raw_response.create(model=model, input=sentences[:5], encoding_format="base64")
assert raw.headers.get("x-bulkhead-unit"), "x-bulkhead-unit header missing"
assert "infer;dur=" in raw.headers.get("server-timing", ""), raw.headers.get("server-timing")
body = json.loads(raw.text)
decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
check("base64", decoded, want[:5])
# Asked for explicitly, the client hands the base64 string through untouched.
r = client.embeddings.create(model=model, input=sentences[:5], encoding_format="base64")
as_floats = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if isinstance(d.embedding, str) else d.embedding
             for d in r.data]
check("base64 via client", as_floats, want[:5])

# The model list names the model.
assert model in [m.id for m in client.models.list().data]

# Errors surface as the client's exceptions with our messages.
try:
    client.embeddings.create(model="no-such-model", input="x")
    raise AssertionError("unknown model accepted")
except Exception as e:  # openai.NotFoundError
    assert getattr(e, "status_code", None) == 404, e
print("openai client: all checks passed")
