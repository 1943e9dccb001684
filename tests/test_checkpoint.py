"""Checkpoints: bit-exact round trip, clear errors on corrupted or foreign files."""
import json
import struct

import pytest
import torch
from safetensors.torch import save as save_safetensors

import kanmodel

torch.set_num_threads(1)


def trained_looking_model(dtype=torch.float32, task="regression"):
    width = [3, 4, 3] if task == "classification" else [3, 4, 2]
    model = kanmodel.KAN(width, grid=5, seed=7, task=task).to(dtype)
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3 + 1
    model.set_standardisation(x, torch.randn(200, width[-1], dtype=dtype) * 5 + 2)
    model.update_grid(x)                 # non-uniform knots
    model.refine(8, x)
    with torch.no_grad():
        model.layers[1].mask[0, 2] = 0.0
    return model, x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_round_trip_is_bit_exact(tmp_path, dtype, task):
    model, x = trained_looking_model(dtype, task)
    path = tmp_path / "model.safetensors"
    kanmodel.save(model, path)
    loaded = kanmodel.load(path)
    assert loaded.config() == model.config()
    assert [layer.uniform for layer in loaded.layers] == [layer.uniform for layer in model.layers]
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert original[name].dtype == restored[name].dtype == dtype
        assert torch.equal(original[name], restored[name]), name
    assert torch.equal(model(x), loaded(x))
    assert kanmodel.to_bytes(loaded) == path.read_bytes()


def test_file_is_safetensors_with_a_json_config_and_no_pickle(tmp_path):
    model, _ = trained_looking_model()
    blob = kanmodel.to_bytes(model)
    (header_size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_size])
    metadata = json.loads(header["__metadata__"]["kanmodel"])
    assert metadata["config"] == model.config()
    assert b"\x80\x04" not in blob[:2] and b"pickle" not in blob
    assert set(header) - {"__metadata__"} == set(model.state_dict())


def test_loaded_model_keeps_training():
    model, x = trained_looking_model()
    loaded = kanmodel.from_bytes(kanmodel.to_bytes(model))
    result = kanmodel.fit(loaded, x, torch.sin(x[:, :2]), steps_per_grid=3, val_fraction=0.0)
    assert result.stages_completed == 1 and len(result.history) == 3


def corruptions(blob: bytes):
    yield "empty", b""
    yield "truncated header", blob[:20]
    yield "truncated tensors", blob[:-16]
    yield "garbage", bytes(range(256)) * 8
    flipped = bytearray(blob)
    flipped[12] ^= 0xFF                  # inside the JSON header
    yield "flipped header byte", bytes(flipped)
    yield "foreign safetensors", save_safetensors({"weight": torch.zeros(3)})
    other = json.dumps({"format": "kanmodel", "format_version": "99"})
    yield "future version", save_safetensors({"weight": torch.zeros(3)}, metadata={"kanmodel": other})


@pytest.mark.parametrize("case", range(7))
def test_corrupted_or_foreign_files_raise_checkpoint_error(tmp_path, case):
    model, _ = trained_looking_model()
    name, blob = list(corruptions(kanmodel.to_bytes(model)))[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(kanmodel.CheckpointError) as error:
        kanmodel.load(path)
    assert str(error.value), name


def test_tensor_that_does_not_match_the_config_is_rejected():
    model, _ = trained_looking_model()
    tensors = {name: t.clone() for name, t in model.state_dict().items()}
    tensors["layers.0.coef"] = tensors["layers.0.coef"][:, :, :-1].contiguous()
    blob = kanmodel.to_bytes(model)
    (header_size,) = struct.unpack("<Q", blob[:8])
    metadata = json.loads(blob[8:8 + header_size])["__metadata__"]
    with pytest.raises(kanmodel.CheckpointError, match="does not match"):
        kanmodel.from_bytes(save_safetensors(tensors, metadata=metadata))


def test_save_replaces_the_file_atomically(tmp_path):
    model, _ = trained_looking_model()
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    kanmodel.save(model, path)
    assert kanmodel.load(path).config() == model.config()
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
