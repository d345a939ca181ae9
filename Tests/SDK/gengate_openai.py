"""OpenAI's official Python SDK (`openai`) pointed at GenGate, unchanged but for its base URL and
key: images (as links and as base64), a chat (whole and streamed), the model list, and errors.

Usage: gengate_openai.py BASE_URL KEY STREAMING_MODEL (BASE_URL ending in /v1).
Prints one JSON line of what it saw; exits non-zero on any surprise.
"""
import base64
import json
import sys
import urllib.request

import openai

base, key, streaming_model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
seen = {}

linked = client.images.generate(model="sim/image", prompt="a lighthouse", n=2, size="256x256")
assert len(linked.data) == 2, linked
for item in linked.data:
    # A plain link: no API key needed, as with OpenAI's own.
    with urllib.request.urlopen(item.url) as answer:
        assert answer.read()[:4] == b"\x89PNG"
seen["url_images"] = len(linked.data)

inline = client.images.generate(model="sim/image", prompt="a lighthouse", response_format="b64_json")
assert base64.b64decode(inline.data[0].b64_json)[:4] == b"\x89PNG"
seen["b64_images"] = len(inline.data)

whole = client.chat.completions.create(model="sim/text", messages=[{"role": "user", "content": "hello"}])
assert whole.choices[0].message.content, whole
assert whole.choices[0].finish_reason == "stop"
seen["whole"] = whole.choices[0].message.content

pieces = []
for chunk in client.chat.completions.create(
    model=streaming_model, messages=[{"role": "user", "content": "the tide comes in"}], stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
seen["streamed"] = "".join(pieces)
seen["chunks"] = len(pieces)

unstreamed = []
for chunk in client.chat.completions.create(
    model="sim/text", messages=[{"role": "user", "content": "hello"}], stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        unstreamed.append(chunk.choices[0].delta.content)
assert "".join(unstreamed) == seen["whole"], unstreamed
seen["models"] = sorted(model.id for model in client.models.list())

try:
    openai.OpenAI(base_url=base, api_key="gg_wrong", max_retries=0).models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as error:
    seen["wrong_key"] = error.status_code

try:
    client.images.generate(model="no/such-model", prompt="x")
    raise SystemExit("an unknown model was accepted")
except openai.BadRequestError as error:
    seen["unknown_model"] = error.status_code

try:
    client.chat.completions.create(model="sim/image", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("an image model was accepted for a chat")
except openai.BadRequestError as error:
    seen["wrong_kind"] = error.status_code

print(json.dumps(seen))
