"""Drives provider-sim's DashScope API with Alibaba's official Python SDK (`dashscope`).

Usage: dashscope_client.py BASE_URL KEY (BASE_URL as the SDK takes it, ending in /api/v1).
Prints one JSON line of what it saw; exits non-zero on any surprise.
"""
import json
import sys
from http import HTTPStatus

import dashscope
from dashscope import ImageSynthesis

base, key = sys.argv[1], sys.argv[2]
dashscope.base_http_api_url = base
seen = {}

submitted = ImageSynthesis.async_call(
    model="wanx2.1-t2i-turbo", prompt="a lighthouse", n=2, size="1024*1024", api_key=key
)
assert submitted.status_code == HTTPStatus.OK, submitted
assert submitted.output.task_status == "PENDING", submitted.output
task_id = submitted.output.task_id

fetched = ImageSynthesis.fetch(task_id, api_key=key)
assert fetched.status_code == HTTPStatus.OK, fetched
assert fetched.output.task_status in ("PENDING", "RUNNING"), fetched.output.task_status

done = ImageSynthesis.wait(submitted, api_key=key)
assert done.status_code == HTTPStatus.OK, done
assert done.output.task_status == "SUCCEEDED", done.output
urls = [result.url for result in done.output.results]
assert len(urls) == 2, urls
seen["images"] = len(urls)

pending = ImageSynthesis.async_call(model="wanx2.1-t2i-turbo", prompt="waves", api_key=key)
cancelled = ImageSynthesis.cancel(pending.output.task_id, api_key=key)
assert cancelled.status_code == HTTPStatus.OK, cancelled
after = ImageSynthesis.fetch(pending.output.task_id, api_key=key)
assert after.output.task_status == "CANCELED", after.output
seen["cancelled"] = after.output.task_status

wrong = ImageSynthesis.async_call(model="wanx2.1-t2i-turbo", prompt="x", api_key="sk-wrong")
assert wrong.status_code == 401 and wrong.code == "InvalidApiKey", wrong
seen["wrong_key"] = wrong.code

bad = ImageSynthesis.async_call(model="wanx2.1-t2i-turbo", prompt="x", size="10*10", api_key=key)
assert bad.status_code == 400 and bad.code == "InvalidParameter", bad
seen["bad_size"] = bad.code

print(json.dumps(seen))
