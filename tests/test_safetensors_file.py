"""Reading a safetensors header: a good file's tensors, and every broken or cut-short file named with its fix."""

import re

import pytest
import torch

from gptcourse.safetensors_file import read_safetensors_header


def test_safetensors_header_errors(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a checkpoint at all")
    with pytest.raises(ValueError, match="not a safetensors file, or it is cut short"):
        read_safetensors_header(bad)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((5).to_bytes(8, "little") + b"{oops")
    with pytest.raises(ValueError, match="broken safetensors header"):
        read_safetensors_header(broken)
    good = tmp_path / "model.safetensors"
    pytest.importorskip("safetensors.torch").save_file(
        {"h.1.attn.c_attn.weight": torch.zeros(64, 192), "wte.weight": torch.zeros(3, 64)}, good)
    assert read_safetensors_header(good)["h.1.attn.c_attn.weight"]["shape"] == [64, 192]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="the file is incomplete"):
        read_safetensors_header(cut)


@pytest.mark.parametrize("header, problem", [
    (b"[1, 2]", r"a JSON list, not an object of tensors"),
    (b'{"wte.weight": {"dtype": "F32", "shape": [2]}}', r"tensor 'wte.weight' has no valid 'shape' and 'data_offsets'"),
])
def test_malformed_safetensors_headers_name_the_file_and_the_fix(tmp_path, header, problem):
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} has a broken safetensors header .*"
                                         f"{problem}.*delete it and download it again"):
        read_safetensors_header(path)
