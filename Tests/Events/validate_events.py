"""Checks event envelopes (one JSON document per line on stdin) against docs/events.schema.json.

    python3 validate_events.py SCHEMA [TOPIC ...] < envelopes.jsonl

With topics, the schema must document exactly those event types. Prints each problem and exits 1
if there is any; prints how many envelopes were valid otherwise.
"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
problems = []
topics = sys.argv[2:]
documented = schema["$defs"]["event"]["properties"]["type"]["enum"]
if topics and sorted(topics) != sorted(documented):
    problems.append(
        f"schema documents {sorted(documented)}, the code has {sorted(topics)}")
count = 0
for number, line in enumerate(sys.stdin, 1):
    if not line.strip():
        continue
    count += 1
    envelope = json.loads(line)
    for error in validator.iter_errors(envelope):
        where = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"line {number} ({envelope.get('payload', {}).get('type')}): {where}: {error.message}")
for problem in problems:
    print(problem)
if problems:
    sys.exit(1)
print(f"{count} valid")
