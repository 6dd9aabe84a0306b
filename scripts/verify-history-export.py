#!/usr/bin/env python3
"""Check a `chatwarden export --format jsonl` file offline, with nothing but Python 3.

Every event's SHA-256 is recomputed from its canonical form (the event's hashed fields as JSON,
keys sorted, no whitespace, UTF-8: the form src/history/chain.rs documents), and every event
that directly follows another must name that event's hash as its prev_hash. Exit 0 when the
whole file verifies, 1 naming the first line that does not, 2 when the file cannot be read.

    python3 scripts/verify-history-export.py history.jsonl
"""

import hashlib
import json
import sys

HASHED = ("actor_name", "actor_oid", "at", "case_id", "data", "detail", "kind", "prev_hash", "seq")


def canonical_hash(event):
    canonical = {key: event.get(key) for key in HASHED}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(path):
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as err:
        print(f"cannot read {path}: {err}")
        return 2
    previous = None
    events = gaps = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            seq, digest = int(event["seq"]), event["hash"]
        except (ValueError, KeyError, TypeError) as err:
            print(f"export does NOT verify: line {number} is not an exported event ({err})")
            return 1
        if previous is not None:
            if seq <= previous[0]:
                print(f"export does NOT verify: line {number}: event {seq} comes after event {previous[0]} (reordered)")
                return 1
            if seq == previous[0] + 1 and event["prev_hash"] != previous[1]:
                print(f"export does NOT verify: line {number}: event {seq} does not follow the event before it")
                return 1
            gaps += seq > previous[0] + 1
        if canonical_hash(event) != digest:
            print(f"export does NOT verify: line {number}: event {seq} was altered (its content does not match its hash)")
            return 1
        events += 1
        previous = (seq, digest)
    print(f"export verified: {events} events, {gaps + 1 if events else 0} stretch(es) of the chain")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
