"""A real S3-compatible server for the tests: moto's server mode on a free port of 127.0.0.1,
with request signatures checked (moto recomputes each with botocore) against an IAM user made
here, and a bucket. Prints one JSON line: endpoint, bucket, the user's access key and secret.

Then reads commands on stdin, one a line, answering each with one JSON line; it reads objects
back with boto3, an S3 client independent of GenGate's:
  get KEY      -> {"bytes", "sha256", "content_type"} or {"missing": true}
  keys         -> {"keys": [...]}
  uploads      -> {"uploads": n}  multipart uploads begun and neither completed nor aborted
  auth on|off  -> {"auth": ...}  signatures checked (the default) or not (to fetch presigned URLs)
  stop         -> {"stopped": true}  the server stops answering (the port is closed)
  start        -> {"started": true}  and answers again, on the same port, with the same objects
Ends when stdin closes.
"""

import hashlib
import json
import socket
import sys

import boto3
from botocore.config import Config
from moto import settings
from moto.server import ThreadedMotoServer


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


port = free_port()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = f"http://127.0.0.1:{port}"
bucket = "gengate-outputs"

# Set up while requests are not yet checked: a user allowed S3, its key, the bucket.
setup = dict(
    endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
    aws_secret_access_key="setup",
)
iam = boto3.client("iam", **setup)
iam.create_user(UserName="gengate")
iam.put_user_policy(
    UserName="gengate", PolicyName="outputs",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="gengate")["AccessKey"]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
    aws_secret_access_key=key["SecretAccessKey"], config=Config(s3={"addressing_style": "path"}),
)
s3.create_bucket(Bucket=bucket)
# From here on every request must carry a valid signature of a known key.
settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

print(json.dumps({
    "endpoint": endpoint, "bucket": bucket, "access_key_id": key["AccessKeyId"],
    "secret_access_key": key["SecretAccessKey"],
}), flush=True)

for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    command, arguments = words[0], words[1:]
    if command == "get":
        try:
            found = s3.get_object(Bucket=bucket, Key=arguments[0])
        except s3.exceptions.NoSuchKey:
            reply = {"missing": True}
        else:
            body = found["Body"].read()
            reply = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                     "content_type": found.get("ContentType")}
    elif command == "keys":
        listed = s3.list_objects_v2(Bucket=bucket)
        reply = {"keys": [entry["Key"] for entry in listed.get("Contents", [])]}
    elif command == "uploads":
        reply = {"uploads": len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))}
    elif command == "stop":
        server.stop()
        server._server.server_close()  # refuse connections, rather than leave them unanswered
        reply = {"stopped": True}
    elif command == "auth":
        # moto cannot check presigned URLs (it wants an Authorization header): "auth off" lets
        # unsigned requests through, "auth on" checks every signature again.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if arguments == ["on"] else float("inf")
        reply = {"auth": arguments[0]}
    elif command == "start":
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        reply = {"started": True}
    else:
        reply = {"error": f"unknown command {command}"}
    print(json.dumps(reply), flush=True)
server.stop()
