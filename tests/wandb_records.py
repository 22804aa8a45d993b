"""Read the records of a wandb offline run file (`run-<id>.wandb`) back, for tests.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of chunks,
each with a 7-byte header (CRC32C, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece of one
protobuf `Record`. Block space too small for a chunk header is zero padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import json
import struct
from pathlib import Path
from typing import Iterator

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, magic, _version = HEADER.unpack_from(data, 0)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a wandb run file"
    pos, pieces = HEADER.size, []
    while pos + CHUNK.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK.size:
            pos += room
            continue
        _crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += room  # zero padding to the end of the block
            continue
        payload = data[pos + CHUNK.size: pos + CHUNK.size + length]
        pos += CHUNK.size + length
        pieces.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


def item_key(item) -> str:
    """Key of a history/summary/config item: `key`, or the dotted `nested_key` newer clients write."""
    return item.key or ".".join(item.nested_key)


@dataclass
class ApiRun:
    """The attributes of wandb.apis.public.Run that the loader reads."""

    id: str
    state: str
    summary: dict
    config: dict
    history: list = field(default_factory=list)

    def scan_history(self):
        return iter(self.history)


def _value(item) -> object:
    return json.loads(item.value_json)


def offline_api_run(path: Path) -> ApiRun:
    """The run of an offline file as wandb.Api() would give it: config and summary as last written, the history
    rows, and the state (`finished` after a clean exit, else `crashed`)."""
    config, summary, history, state, run_id = {}, {}, [], "running", ""
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config.update({item_key(i): _value(i) for i in record.run.config.update})
        elif kind == "config":
            config.update({item_key(i): _value(i) for i in record.config.update})
        elif kind == "summary":
            summary.update({item_key(i): _value(i) for i in record.summary.update})
        elif kind == "history":
            history.append({item_key(i): _value(i) for i in record.history.item})
        elif kind == "exit":
            state = "finished" if record.exit.exit_code == 0 else "crashed"
    config.pop("_wandb", None)
    return ApiRun(run_id, state, summary, config, history)
