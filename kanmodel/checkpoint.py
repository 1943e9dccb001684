"""Checkpoints: one safetensors file whose metadata holds the model's JSON config.

No pickle and no training data: the file is the model's tensors (parameters,
knots, masks, standardisation) plus ``config()`` and each layer's uniform flag.
"""
from __future__ import annotations

import json
import os
import struct

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from kanmodel.model import KAN

FORMAT_NAME = "kanmodel"
FORMAT_VERSION = "1"
METADATA_KEY = "kanmodel"


class CheckpointError(ValueError):
    """The bytes are not a readable kanmodel checkpoint (corrupted, truncated or foreign)."""


def to_bytes(model: KAN) -> bytes:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    # One metadata key: safetensors writes several keys in hash order, which would make
    # the bytes of two identical models differ.
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config(),
        "uniform": [layer.uniform for layer in model.layers],
        "dtype": str(model.in_shift.dtype).removeprefix("torch."),
    }
    return save_tensors(tensors, metadata={METADATA_KEY: json.dumps(header, sort_keys=True)})


def _read_metadata(blob: bytes) -> dict:
    # safetensors layout: u64 little-endian header size, then a JSON header.
    if len(blob) < 8:
        raise CheckpointError("checkpoint is too short to be a safetensors file")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if header_size > len(blob) - 8:
        raise CheckpointError("checkpoint header size exceeds the file: truncated or not safetensors")
    try:
        header = json.loads(blob[8: 8 + header_size])
        metadata = json.loads(header["__metadata__"][METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint header is not valid JSON: {error}") from None
    except (KeyError, TypeError):
        raise CheckpointError("not a kanmodel checkpoint (no kanmodel metadata in the safetensors header)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise CheckpointError("not a kanmodel checkpoint (metadata lacks format=kanmodel)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"unsupported kanmodel checkpoint version {metadata.get('format_version')!r}")
    return metadata


def from_bytes(blob: bytes) -> KAN:
    """A model on the CPU (move it with .to(device)); CheckpointError if blob is not one."""
    metadata = _read_metadata(blob)
    try:
        config = metadata["config"]
        uniform = metadata["uniform"]
        dtype = getattr(torch, metadata["dtype"])
    except (KeyError, AttributeError) as error:
        raise CheckpointError(f"checkpoint metadata is incomplete or malformed: {error!r}") from None
    if not isinstance(dtype, torch.dtype) or not isinstance(config, dict) or not isinstance(uniform, list):
        raise CheckpointError("checkpoint metadata is malformed (config, uniform or dtype)")
    try:
        tensors = load_tensors(blob)
    except Exception as error:  # safetensors raises its own error type for any bad payload
        raise CheckpointError(f"checkpoint tensors are unreadable: {error}") from None
    try:
        model = KAN(**config).to(dtype)
        for index, layer in enumerate(model.layers):
            layer.set_knots(tensors[f"layers.{index}.knots"], bool(uniform[index]))
        model.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint does not match its config: {error}") from None
    return model


def save(model: KAN, path: str | os.PathLike) -> None:
    """Write the model to path atomically (a temporary file, then a rename)."""
    blob = to_bytes(model)
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(blob)
    os.replace(temporary, path)


def load(path: str | os.PathLike) -> KAN:
    with open(path, "rb") as handle:
        return from_bytes(handle.read())
