"""Prints GenGate's job events as they happen: a ZeroMQ SUB socket on the public event stream.

    pip install pyzmq
    python3 subscriber.py [tcp://127.0.0.1:5560] [topic-prefix]

Each message is two frames: the topic (the event's type) and a JSON envelope whose schema is
docs/events.schema.json. PUB/SUB drops what a slow or late subscriber misses: read the HTTP API
for anything that must not be lost.
"""
import json
import sys

import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5560"
prefix = sys.argv[2] if len(sys.argv) > 2 else "generation."
socket = zmq.Context().socket(zmq.SUB)
socket.connect(endpoint)
socket.setsockopt_string(zmq.SUBSCRIBE, prefix)
while True:
    topic, body = socket.recv_multipart()
    envelope = json.loads(body)
    if envelope["v"] != 1:
        continue  # a schema version this reader does not know
    event = envelope["payload"]
    print(topic.decode(), event.get("generation_id", "-"), json.dumps(envelope), flush=True)
