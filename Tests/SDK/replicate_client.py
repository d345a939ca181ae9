"""Drives provider-sim's Replicate API with Replicate's official Python client.

Usage: replicate_client.py BASE_URL TOKEN. Prints one JSON line of what it saw; exits non-zero
on any surprise, so the Swift test that runs it fails with this script's output.
"""
import json
import sys

import httpx
import replicate
from replicate.exceptions import ReplicateError

base, token = sys.argv[1], sys.argv[2]
client = replicate.Client(api_token=token, base_url=base)
seen = {}

created = client.predictions.create(
    model="black-forest-labs/flux-schnell", input={"prompt": "a lighthouse", "num_outputs": 2}
)
assert created.status == "starting", created.status
created.wait()
assert created.status == "succeeded", created.status
assert len(created.output) == 2, created.output
seen["polled_outputs"] = len(created.output)

# run() holds the request open with `Prefer: wait`, then reads the outputs.
output = client.run("black-forest-labs/flux-schnell", input={"prompt": "a dog"})
first = output[0]
data = first.read() if hasattr(first, "read") else httpx.get(first).content
assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
seen["run_png_bytes"] = len(data)

slow = client.predictions.create(model="minimax/video-01", input={"prompt": "waves"})
slow.cancel()
slow.reload()
assert slow.status == "canceled", slow.status
seen["cancelled"] = slow.status

try:
    replicate.Client(api_token="r8_wrong", base_url=base).predictions.create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}
    )
    raise SystemExit("a wrong token was accepted")
except ReplicateError as error:
    assert error.status == 401, error.status
    seen["wrong_token_status"] = error.status

print(json.dumps(seen))
