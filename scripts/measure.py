#!/usr/bin/env python3
"""Rough figures from a running GenGate (not a benchmark suite): end-to-end time of n=4 sim/image
jobs, and submit latency of sequential requests with the time until all of them completed.

    .build/release/gengate up --data-dir /tmp/gg &
    python3 scripts/measure.py --url http://127.0.0.1:8080 --key "$(cat /tmp/gg/admin.key)"
"""
import argparse, json, statistics, time, urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://127.0.0.1:8080")
parser.add_argument("--key", required=True)
parser.add_argument("--jobs", type=int, default=5, help="n=4 image jobs to time end to end")
parser.add_argument("--submits", type=int, default=300, help="sequential text submissions")
args = parser.parse_args()

def call(method, path, body=None):
    request = urllib.request.Request(args.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": "Bearer " + args.key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())

def wait(ids):
    for gid in ids:
        while (status := call("GET", f"/v1/generations/{gid}")["status"]) not in ("completed", "failed", "cancelled"):
            time.sleep(0.01)
        assert status == "completed", f"{gid} ended {status}"

times = []
for i in range(args.jobs):
    start = time.time()
    wait([call("POST", "/v1/generations", {"model": "sim/image", "prompt": f"lighthouse {i}", "n": 4})["id"]])
    times.append(time.time() - start)
print("n=4 sim/image end to end (s):", [round(t, 3) for t in times], "median", round(statistics.median(times), 3))

latencies, ids = [], []
first = time.time()
for i in range(args.submits):
    start = time.time()
    ids.append(call("POST", "/v1/generations", {"model": "sim/text", "prompt": f"p{i}"})["id"])
    latencies.append((time.time() - start) * 1000)
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print(f"submit latency over {args.submits} sequential requests (ms): p50 {pick(0.5):.2f} p90 {pick(0.9):.2f} p99 {pick(0.99):.2f}")
wait(ids)
print(f"all {args.submits} sim/text jobs completed {time.time() - first:.2f} s after the first submit")
