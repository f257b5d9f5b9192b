"""The course's GGUF reader against llama.cpp's own Python package (`gguf`), on files it writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from gptcourse.gguf_file import (  # noqa: E402
    GGUFError,
    dequantize,
    dequantize_q4_1,
    dequantize_q8_0,
    read_gguf,
)

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A GGUF file with metadata of every value type and tensors in F32, F16, Q8_0 and Q4_1."""
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.u32", 7)
    writer.add_int32("test.i32", -3)
    writer.add_float32("test.f32", 0.5)
    writer.add_bool("test.flag", True)
    writer.add_string("test.text", "héllo, 세계")
    writer.add_array("test.words", ["a", "bb", "ccc"])
    writer.add_array("test.numbers", [1, 2, 3])
    writer.add_uint64("test.u64", 2**40)
    writer.add_float64("test.f64", -1.25)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4, 8)).astype(np.float16),
        "q8": rng.standard_normal((2, 64)).astype(np.float32),
        "q41": rng.standard_normal((3, 96)).astype(np.float32),
    }
    writer.add_tensor("f32", tensors["f32"])
    writer.add_tensor("f16", tensors["f16"])
    writer.add_tensor("q8", gguf.quants.quantize(tensors["q8"], Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.add_tensor("q41", _quantize_q4_1(tensors["q41"]), raw_dtype=Q.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, tensors


def _quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """Q4_1 blocks written out here (gguf's quantize does not offer Q4_1): d, m, packed nibbles."""
    blocks = x.reshape(-1, 32)
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16)
    q = np.clip(np.round((blocks - lo) / np.where(d == 0, 1, d.astype(np.float32))), 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    out = np.concatenate([d.view(np.uint8), lo.astype(np.float16).view(np.uint8), packed], axis=1)
    return out.reshape(x.shape[0], -1)


def test_metadata_and_tensor_table_equal_ggufs_reader(small_file):
    path, _ = small_file
    ours, theirs = read_gguf(path), gguf.GGUFReader(str(path))
    assert ours.version == 3
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue  # the header's own numbers, which gguf lists as fields
        assert ours.metadata[key] == pytest.approx(field.contents()), key
    assert ours.metadata["test.text"] == "héllo, 세계"
    assert ours.metadata["test.words"] == ["a", "bb", "ccc"]
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        assert info.shape == tuple(reversed(tensor.shape.tolist()))  # GGUF lists dims reversed
        assert info.type == int(tensor.tensor_type)
        assert info.offset == tensor.data_offset
        assert info.n_bytes == tensor.n_bytes


@pytest.mark.parametrize("name", ["f32", "f16", "q8", "q41"])
def test_dequantised_tensors_equal_ggufs_dequantiser(small_file, name):
    path, originals = small_file
    ours = read_gguf(path).tensor(name)
    theirs = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    expected = gguf.quants.dequantize(theirs.data, theirs.tensor_type).reshape(ours.shape)
    assert ours.dtype == torch.float32 and ours.shape == originals[name].shape
    assert torch.equal(ours, torch.from_numpy(np.array(expected, dtype=np.float32)))
    # And close to the values before quantisation: within half a step of the block's scale.
    err = (ours - torch.from_numpy(originals[name].astype(np.float32))).abs().max().item()
    assert err < {"f32": 1e-7, "f16": 1e-7, "q8": 0.02, "q41": 0.25}[name]


def test_q4_1_block_by_hand():
    # d = 0.5, m = -1.0; byte j holds value j (low nibble) and value j + 16 (high nibble).
    q = list(range(16)) + [15 - j for j in range(16)]
    packed = bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    raw = np.float16(0.5).tobytes() + np.float16(-1.0).tobytes() + packed
    values = dequantize_q4_1(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    assert values.tolist() == [0.5 * v - 1.0 for v in q]


def test_q8_0_block_by_hand():
    q = np.arange(-16, 16, dtype=np.int8)
    raw = np.float16(0.25).tobytes() + q.tobytes()
    values = dequantize_q8_0(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    assert values.tolist() == (0.25 * q.astype(np.float32)).tolist()


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(path)
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(TypeError, match="path must be a str or Path"):
        read_gguf(3)


def test_a_cut_short_file_says_so(small_file, tmp_path):
    path, _ = small_file
    data = path.read_bytes()
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:200])  # ends inside the metadata
    with pytest.raises(GGUFError, match="cut short"):
        read_gguf(short)
    tail_cut = tmp_path / "tail.gguf"
    tail_cut.write_bytes(data[:-40])  # the table is whole, the last tensor is not
    gguf_file = read_gguf(tail_cut)
    with pytest.raises(GGUFError, match="cut short"):
        gguf_file.tensor("q41")


def test_a_newer_version_is_refused(small_file, tmp_path):
    path, _ = small_file
    data = bytearray(path.read_bytes())
    data[4:8] = (9).to_bytes(4, "little")
    newer = tmp_path / "v9.gguf"
    newer.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="version 9"):
        read_gguf(newer)


def test_unknown_tensor_type_is_named():
    with pytest.raises(GGUFError, match="tensor type 12"):
        dequantize(torch.zeros(10, dtype=torch.uint8), 12)
