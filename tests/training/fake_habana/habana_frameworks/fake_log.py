"""The ordered record of calls the fake bridge received; mirrored to a JSON-lines file when FAKE_HABANA_LOG is set."""

from __future__ import annotations

import json
import os

CALLS: list[dict] = []


def record(name: str, **details) -> None:
    """Append one call; written through to the file at once so that a crashed run still leaves its log."""
    entry = {"call": name, **details}
    CALLS.append(entry)
    prefix = os.environ.get("FAKE_HABANA_LOG")
    if prefix:
        with open(f"{prefix}.rank{os.environ.get('RANK', '0')}.jsonl", "a") as handle:
            handle.write(json.dumps(entry) + "\n")
