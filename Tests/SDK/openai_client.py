"""Drives provider-sim's OpenAI API with OpenAI's official Python SDK (`openai`).

Usage: openai_client.py BASE_URL KEY (BASE_URL as the SDK takes it, ending in /v1).
Prints one JSON line of what it saw; exits non-zero on any surprise.
"""
import base64
import json
import sys
import urllib.request

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
seen = {}

images = client.images.generate(model="gpt-image-1", prompt="a lighthouse", n=2, size="1024x1024")
assert len(images.data) == 2, images
assert all(base64.b64decode(item.b64_json)[:4] == b"\x89PNG" for item in images.data)
assert images.usage is not None and images.usage.total_tokens > 0, images.usage
seen["b64_images"] = len(images.data)

linked = client.images.generate(model="dall-e-2", prompt="a lighthouse", response_format="url")
with urllib.request.urlopen(linked.data[0].url) as answer:
    assert answer.read()[:4] == b"\x89PNG"
seen["url_images"] = len(linked.data)

# An edit from two images, as the SDK sends it (multipart, the images as `image[]` files).
first = base64.b64decode(images.data[0].b64_json)
edited = client.images.edit(
    model="gpt-image-1", prompt="the same, at night", n=1,
    image=[("first.png", first, "image/png"), ("second.png", first, "image/png")])
assert base64.b64decode(edited.data[0].b64_json)[:4] == b"\x89PNG"
seen["edited"] = len(edited.data)

pieces = []
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "the tide comes in"}],
    stream=True,
    stream_options={"include_usage": True},
)
usage = None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(pieces) == "Echo: the tide comes in", pieces
assert usage is not None and usage.completion_tokens > 0, usage
seen["streamed"] = "".join(pieces)
seen["chunks"] = len(pieces)

whole = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
assert whole.choices[0].message.content == "Echo: hello", whole
assert whole.choices[0].finish_reason == "stop"
seen["whole"] = whole.choices[0].message.content

seen["models"] = sorted(model.id for model in client.models.list())

try:
    openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).images.generate(model="dall-e-2", prompt="x")
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as error:
    seen["wrong_key"] = error.code

try:
    client.images.generate(model="dall-e-3", prompt="x", n=2)
    raise SystemExit("dall-e-3 with n=2 was accepted")
except openai.BadRequestError as error:
    seen["bad_n"] = error.param

print(json.dumps(seen))
