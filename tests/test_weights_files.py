"""Weights files read through safetensors' memory map (compiler.weights.load_tensors):
a corrupt, truncated or foreign file is one line naming the file (WeightsError, exit
code 2; CheckpointError through `zoo import`), and the mapped tensors are private:
writing to one changes neither the file nor a second read of it."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from compiler.weights import WeightsError, load_tensors, save_tensors
from zoo.app.cli import main

TENSORS = {"a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b.ids": torch.arange(5), "c.half": torch.ones(2, 2, dtype=torch.float16)}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_tensors(TENSORS, path, {"note": "x"})
    return path


def rewritten(good, header: dict) -> bytes:
    """The good file's tensor bytes under another JSON header."""
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + raw[8 + n :]


def header_of(good) -> dict:
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


def bad_file(kind: str, good) -> bytes:
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = header_of(good)
    if kind == "corrupt header":
        return raw[:8] + b"{\x00\xff" + raw[11 : 8 + n] + raw[8 + n :]
    if kind == "truncated":
        return raw[: len(raw) - 7]
    if kind == "truncated in the header":
        return raw[: 8 + n // 2]
    if kind == "header length out of range":
        return struct.pack("<Q", 1 << 40) + raw[8:]
    if kind == "too short":
        return raw[:5]
    if kind == "not safetensors":
        return b"PK\x03\x04 a zip, not weights" * 10
    if kind == "byte range beyond the file":
        return rewritten(good, header | {"a.weight": header["a.weight"] | {"data_offsets": [0, 480]}})
    if kind == "shape that does not fit its bytes":
        return rewritten(good, header | {"a.weight": header["a.weight"] | {"shape": [4, 4]}})
    if kind == "metadata not strings":
        return rewritten(good, header | {"__metadata__": {"note": 3}})
    raise AssertionError(kind)


KINDS = [
    "corrupt header",
    "truncated",
    "truncated in the header",
    "header length out of range",
    "too short",
    "not safetensors",
    "byte range beyond the file",
    "shape that does not fit its bytes",
    "metadata not strings",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_weights_file_is_one_line_naming_it(tmp_path, good, kind):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bad_file(kind, good))
    with pytest.raises(WeightsError) as info:
        load_tensors(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a safetensors file ("), message
    assert "\n" not in message and len(message) < len(str(path)) + 200, message
    assert info.value.exit_code == 2


def test_a_missing_file_or_a_folder_is_one_line_naming_it(tmp_path):
    for path in (tmp_path / "absent.safetensors", tmp_path):
        with pytest.raises(WeightsError, match="cannot read weights") as info:
            load_tensors(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_a_dtype_the_zoo_does_not_store_is_refused(tmp_path, good):
    header = header_of(good)
    path = tmp_path / "i16.safetensors"  # a valid file: 12 float32 = 24 int16 by bytes
    path.write_bytes(rewritten(good, header | {"a.weight": header["a.weight"] | {"dtype": "I16", "shape": [6, 4]}}))
    with pytest.raises(WeightsError, match=r"tensor 'a.weight' has dtype int16, which the zoo does not read") as info:
        load_tensors(path)
    assert str(info.value).startswith(f"{path}: ")


def test_tensors_and_metadata_round_trip_and_writes_stay_in_memory(good):
    tensors, metadata = load_tensors(good)
    assert metadata == {"note": "x"}
    assert set(tensors) == set(TENSORS) and all(torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype for k, v in TENSORS.items())
    before = good.read_bytes()
    tensors["a.weight"][0, 0] = 99.0  # a private (copy-on-write) map: the file is untouched
    assert good.read_bytes() == before
    assert load_tensors(good)[0]["a.weight"][0, 0] == 0.0
    save_tensors(tensors, good)  # over the file it was read from: a new file renamed into place
    assert load_tensors(good)[0]["a.weight"][0, 0] == 99.0


@pytest.mark.parametrize("kind", ["corrupt header", "truncated"])
def test_zoo_import_refuses_a_bad_checkpoint_file_in_one_line(tmp_path, capsys, kind):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "hf"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(bad_file(kind, weights))
    capsys.readouterr()  # what transformers printed while saving
    code = main(["import", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {weights}: not a safetensors file ("), err
    assert not (tmp_path / "out").exists()
    shutil.rmtree(folder)
