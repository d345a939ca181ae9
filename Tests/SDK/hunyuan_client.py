"""Drives provider-sim's Hunyuan API with Tencent Cloud's official Python SDK
(`tencentcloud-sdk-python-hunyuan`), which signs every call with TC3-HMAC-SHA256.

Usage: hunyuan_client.py BASE_URL SECRET_ID SECRET_KEY (BASE_URL: http://host:port).
Prints one JSON line of what it saw; exits non-zero on any surprise.
"""
import json
import sys
import time
from urllib.parse import urlparse

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.hunyuan.v20230901 import hunyuan_client, models

base, secret_id, secret_key = sys.argv[1], sys.argv[2], sys.argv[3]
address = urlparse(base)


def client(secret):
    http = HttpProfile(endpoint=address.netloc, protocol=address.scheme, reqTimeout=10)
    return hunyuan_client.HunyuanClient(
        credential.Credential(secret_id, secret), "ap-guangzhou", ClientProfile(httpProfile=http)
    )


seen = {}
hunyuan = client(secret_key)

submit = models.SubmitHunyuanImageJobRequest()
submit.Prompt = "雨中的灯塔"
submit.Num = 2
submit.Resolution = "1024:1024"
job = hunyuan.SubmitHunyuanImageJob(submit).JobId
assert job, "no JobId"

query = models.QueryHunyuanImageJobRequest()
query.JobId = job
states = []
for _ in range(100):
    answer = hunyuan.QueryHunyuanImageJob(query)
    states.append(answer.JobStatusCode)
    if answer.JobStatusCode in ("4", "5"):
        break
    time.sleep(0.1)
assert answer.JobStatusCode == "5", answer.to_json_string()
assert len(answer.ResultImage) == 2, answer.ResultImage
seen["images"] = len(answer.ResultImage)
seen["states"] = sorted(set(states))

# A key that is not the account's: Tencent refuses the signature, and the SDK raises its code.
try:
    client(secret_key + "x").SubmitHunyuanImageJob(submit)
    raise SystemExit("a bad signature was accepted")
except TencentCloudSDKException as error:
    seen["bad_signature"] = error.get_code()

bad = models.SubmitHunyuanImageJobRequest()
bad.Prompt = "x"
bad.Num = 9
try:
    hunyuan.SubmitHunyuanImageJob(bad)
    raise SystemExit("Num 9 was accepted")
except TencentCloudSDKException as error:
    seen["bad_num"] = error.get_code()

print(json.dumps(seen))
