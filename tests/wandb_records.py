"""Read an offline W&B run file (``run-<id>.wandb``): a LevelDB-style log of protobuf Records after a
7-byte header (":W&B", magic, version); records are split into chunks at 32 KiB block boundaries."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK, CHUNK_HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, raw = CHUNK_HEADER, b"", []
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:   # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == FULL:
            raw.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            raw.append(pending + chunk)
        elif kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    out = []
    for blob in raw:
        record = pb.Record()
        record.ParseFromString(blob)
        out.append(record)
    return out


def history(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """(history rows as {key: value}, whether the run file ends with an exit record: W&B was finished)."""
    rows, finished = [], False
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
        finished = finished or kind == "exit"
    return rows, finished
