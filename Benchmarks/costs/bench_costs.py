"""What budgets and experiments cost a running GenGate: submissions by a key with a budget
against one without (the budget check is a read and two writes in the submitting transaction),
and the time GET /v1/admin/experiments/{id}/results takes over an experiment's jobs.

Usage: python3 Benchmarks/costs/bench_costs.py [--bin .build/release] [--jobs 10000]
Starts `gengate up` on free ports in a scratch data directory (sim provider, 100 ms tasks) and
prints one line per figure. Standard library only.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gate:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="gg-costs-")
        self.port, monitor, events = free_port(), free_port(), free_port()
        env = dict(os.environ, GENGATE_SIM_LATENCY_MS="100")
        self.log = open(os.path.join(self.dir, "gengate.log"), "w")
        self.process = subprocess.Popen(
            [os.path.join(binary, "gengate"), "up", "--data-dir", self.dir, "--http-port", str(self.port),
             "--monitor-port", str(monitor), "--events-port", str(events)],
            stdout=self.log, stderr=self.log, env=env)
        key_file = os.path.join(self.dir, "admin.key")
        for _ in range(600):
            if os.path.exists(key_file):
                try:
                    self.call("GET", "/health", key=None)
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        self.admin = open(key_file).read().strip()

    def call(self, method, path, body=None, key="admin"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if key:
            request.add_header("Authorization", f"Bearer {self.admin if key == 'admin' else key}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self):
        self.process.terminate()
        self.process.wait(60)
        shutil.rmtree(self.dir, ignore_errors=True)


def submissions(gate, key, count, clients=16):
    """Closed loop: `clients` threads submit `count` jobs; returns jobs a second and p50/p99 ms."""
    latencies, lock = [], threading.Lock()
    per = count // clients

    def run():
        for _ in range(per):
            started = time.perf_counter()
            status, _ = gate.call("POST", "/v1/generations", {"model": "sim/image", "prompt": "a fox"}, key=key)
            assert status == 202, status
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=".build/release")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--submissions", type=int, default=3_200)
    options = parser.parse_args()
    gate = Gate(options.bin)
    try:
        plain = gate.call("POST", "/v1/admin/keys", {"name": "plain"})[1]["key"]
        capped = gate.call("POST", "/v1/admin/keys", {"name": "capped", "budget_daily": 1e6, "budget_monthly": 1e7})[1]["key"]
        for name, key in (("without a budget", plain), ("with a budget", capped), ("without a budget, again", plain)):
            rate, p50, p99 = submissions(gate, key, options.submissions)
            print(f"submit, 16 clients, key {name}: {rate:.0f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")

        experiment = {
            "name": "bench", "variants": [
                {"name": "a", "model": "sim/image", "traffic": 50},
                {"name": "b", "model": "sim/image", "traffic": 50, "params": {"sim_fail": True}}]}
        status, made = gate.call("POST", "/v1/admin/experiments", experiment)
        assert status == 201, made
        gate.call("POST", "/v1/admin/experiments/bench/start")
        sent = 0
        while sent < options.jobs:
            size = min(1000, options.jobs - sent)
            requests = [{"experiment": "bench", "subject": f"user-{sent + i}", "prompt": "a fox"} for i in range(size)]
            status, batch = gate.call("POST", "/v1/batches", {"requests": requests, "max_concurrency": 1000}, key=plain)
            assert status == 202, batch
            sent += size
        deadline = time.time() + 1800
        while time.time() < deadline:
            _, results = gate.call("GET", "/v1/admin/experiments/bench/results")
            if sum(v["ended"] for v in results["variants"]) >= options.jobs:
                break
            time.sleep(2)
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            gate.call("GET", "/v1/admin/experiments/bench/results")
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        print(f"results over {options.jobs} ended jobs: p50 {timings[5]:.0f} ms, max {timings[-1]:.0f} ms "
              f"(winner {results['winner'] and results['winner']['variant']})")
    finally:
        gate.stop()


if __name__ == "__main__":
    main()
