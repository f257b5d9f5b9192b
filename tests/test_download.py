"""The download cache: where it lives, sha256 checks, atomic writes, and the offline message."""

import hashlib
import http.client
import io
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gptcourse import data as data_module
from gptcourse.download import DownloadError, data_dir, download, fetch, sha256_of, verify

CONTENT = b"To be, or not to be, that is the question.\n" * 50
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def source(tmp_path) -> str:
    """A file:// URL to serve CONTENT from, so no test needs the network."""
    path = tmp_path / "server" / "input.txt"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    return path.as_uri()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    """Temp files a download left behind (atomic.write_atomically names them *.tmp)."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


def block_network(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


# --- where the cache lives ---------------------------------------------------------------------
def test_data_dir_env_var_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path / "prefilled"))
    assert data_dir() == tmp_path / "prefilled"


def test_data_dir_defaults_to_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTCOURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "gptcourse"


def test_data_dir_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTCOURSE_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir() == tmp_path / ".cache" / "gptcourse"


def test_empty_env_var_means_default(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "gptcourse"


# --- sha256 ------------------------------------------------------------------------------------
def test_sha256_of_known_value(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert sha256_of(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_rejects_wrong_checksum(tmp_path):
    path = tmp_path / "file.txt"
    path.write_bytes(CONTENT)
    verify(path, SHA)  # no error
    with pytest.raises(DownloadError, match="corrupt or incomplete"):
        verify(path, "0" * 64)


# --- download: verified and atomic -------------------------------------------------------------
def test_download_writes_verified_file(source, tmp_path):
    target = tmp_path / "out" / "input.txt"
    assert download(source, target, SHA) == target
    assert target.read_bytes() == CONTENT
    assert leftovers(tmp_path / "out") == []
    # readable by everyone, not only by the owner as a bare temp file would be
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_download_with_wrong_checksum_leaves_nothing(source, tmp_path):
    target = tmp_path / "out" / "input.txt"
    with pytest.raises(DownloadError, match="sha256"):
        download(source, target, "0" * 64)
    assert not target.exists()
    assert os.listdir(tmp_path / "out") == []


def test_download_without_a_digest_is_checked_by_the_check(source, tmp_path):
    def shakespeare_only(path: Path) -> None:
        if not path.read_bytes().startswith(b"To be"):
            raise ValueError("not Shakespeare")

    target = tmp_path / "out" / "input.txt"
    assert download(source, target, check=shakespeare_only).read_bytes() == CONTENT

    def refuse(path: Path) -> None:
        assert path != target and path.read_bytes() == CONTENT  # checked before it gets the name
        raise ValueError("a check that refuses")

    with pytest.raises(DownloadError, match="is unusable \\(a check that refuses\\); nothing was saved"):
        download(source, tmp_path / "out" / "other.txt", check=refuse)
    assert os.listdir(tmp_path / "out") == ["input.txt"]


def test_download_without_any_check_is_refused(source, tmp_path):
    with pytest.raises(ValueError, match="download needs sha256= or check="):
        download(source, tmp_path / "input.txt")
    assert not (tmp_path / "input.txt").exists()


class BrokenResponse(io.BytesIO):
    """A response that delivers some bytes and then loses the connection."""

    headers = {"Content-Length": str(len(CONTENT))}

    def read(self, size=-1):
        if self.tell() > 100:
            raise http.client.IncompleteRead(b"", len(CONTENT) - self.tell())
        return super().read(min(size, 64))


@pytest.mark.parametrize("error", ["incomplete", "oserror"])
def test_interrupted_download_leaves_no_file_and_no_part(monkeypatch, tmp_path, error):
    def urlopen(url, timeout):
        if error == "oserror":
            raise TimeoutError("timed out")
        return BrokenResponse(CONTENT)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    target = tmp_path / "out" / "input.txt"
    with pytest.raises(DownloadError, match="Could not download"):
        download("https://example.invalid/input.txt", target, SHA)
    assert os.listdir(tmp_path / "out") == []


def test_failed_download_keeps_previous_file_untouched(monkeypatch, tmp_path):
    target = tmp_path / "input.txt"
    target.write_bytes(b"old")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: BrokenResponse(CONTENT))
    with pytest.raises(DownloadError):
        download("https://example.invalid/input.txt", target, SHA)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


# --- fetch: the cache ----------------------------------------------------------------------------
def test_fetch_downloads_once_then_uses_cache(cache, source, monkeypatch):
    path = fetch(source, "corpus/input.txt", SHA)
    assert path == cache / "corpus" / "input.txt"
    assert path.read_bytes() == CONTENT
    block_network(monkeypatch)  # the second call must not touch the network
    assert fetch(source, "corpus/input.txt", SHA) == path


@pytest.mark.parametrize("bad", [CONTENT[:-10], b"x" + CONTENT[1:]], ids=["truncated", "wrong"])
def test_bad_cached_file_is_never_used(cache, source, bad):
    path = cache / "corpus" / "input.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(bad)
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        fetch(source, "corpus/input.txt", SHA, download_ok=False)
    # allowed to download, it replaces the bad copy with a verified one
    assert fetch(source, "corpus/input.txt", SHA).read_bytes() == CONTENT
    assert leftovers(cache) == []


def test_bad_cached_file_offline_is_reported_not_used(cache, monkeypatch):
    path = cache / "corpus" / "input.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(CONTENT[:-10])
    block_network(monkeypatch)
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        fetch("https://example.invalid/input.txt", "corpus/input.txt", SHA)


def test_offline_without_cache_gives_one_clear_error(cache, monkeypatch):
    block_network(monkeypatch)
    with pytest.raises(DownloadError) as info:
        fetch("https://example.invalid/input.txt", "corpus/input.txt", SHA)
    message = str(info.value)
    assert "corpus/input.txt is missing" in message  # the missing file
    assert f"Looked in the data folder {cache}" in message  # where it looked
    assert "GPTCOURSE_DATA_DIR" in message and "python -m gptcourse data" in message  # the fix
    assert "no network in this test" in message  # the underlying reason
    # one error, not a chain of three tracebacks
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not (cache / "corpus" / "input.txt").exists()
    assert leftovers(cache) == []


def test_load_text_offline_without_cache(cache, monkeypatch):
    block_network(monkeypatch)
    with pytest.raises(DownloadError, match=r"tinyshakespeare/input.txt is missing(.|\n)*GPTCOURSE_DATA_DIR"):
        data_module.load_text()


def test_unwritable_destination_is_a_download_error(tmp_path, source):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DownloadError, match="Could not create"):
        download(source, blocker / "input.txt", SHA)
