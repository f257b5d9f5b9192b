"""Atomic writes: the target is the old file or the new one, never half of one, and no temp stays."""

from __future__ import annotations

import pytest
import torch

from gptcourse.atomic import torch_save_atomically, write_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"new but cut")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deeper" / "model.pt"  # the folder is made
    torch_save_atomically({"w": torch.arange(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    torch_save_atomically({"w": torch.arange(5)}, target)
    assert torch.load(target, weights_only=True)["w"].numel() == 5
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]


def test_a_refused_check_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    seen = []

    def refuse(path):
        seen.append(path.read_bytes())  # the written bytes are on disk under another name
        raise ValueError("bad checksum")

    with pytest.raises(ValueError, match="bad checksum"):
        write_atomically(target, lambda handle: handle.write(b"new"), check=refuse)
    assert seen == [b"new"] and target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
