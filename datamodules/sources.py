"""Find a dataset's raw files: data directories, then system packages, then a checksummed download.

The product never depends on one fixed location: a user points ``ARCHBENCH_DATA_DIR`` or ``data_dir`` at
a folder, installs a distribution package, or lets us download from the canonical source. When none
works the error names every option that was tried, on one line, so it reads well in logs and CLIs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ENV_VAR = "ARCHBENCH_DATA_DIR"
DEFAULT_DATA_DIR = "data"
_CHUNK = 1 << 16


class DataNotFoundError(Exception):
    """No location held the file and no download worked; the message lists every option tried."""


class ChecksumError(ValueError):
    """A file's sha256 is not the expected one (a corrupt, truncated or different version of the data)."""


@dataclass(frozen=True)
class RemoteFile:
    """One raw file of a dataset.

    ``relpath`` is where it lives under any data directory. ``url`` may be None where there is no
    canonical stable download (e.g. a Debian word list): then only local copies count. ``sha256`` may be
    None only together with ``url=None``: a file we never download is whatever version the system ships,
    so pinning one version would reject every other distribution's copy.
    """

    relpath: str
    url: str | None
    sha256: str | None
    package: str | None = None  # a distribution package that installs it, for the error message

    def __post_init__(self) -> None:
        if self.url is not None and not self.sha256:
            raise ValueError(f"RemoteFile {self.relpath!r}: a downloadable file needs a sha256")
        if Path(self.relpath).is_absolute() or ".." in Path(self.relpath).parts:
            raise ValueError(f"RemoteFile relpath must be relative and inside the data dir, got {self.relpath!r}")


def _one_line(text: object) -> str:
    # OS and HTTP errors can carry newlines; our messages promise to be a single line.
    return " ".join(str(text).split())


def data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories to search, in order: those in ``ARCHBENCH_DATA_DIR``, then ``data_dir`` (default "data")."""
    env = os.environ.get(ENV_VAR, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    dirs.append(Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, sha256: str | None) -> Path:
    if sha256 is None:
        return path
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected sha256 {sha256}, got {actual} "
            "(corrupt or different version; delete or replace it)"
        )
    return path


def download(url: str, dest: Path, sha256: str, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest``, verifying ``sha256``; ``dest`` only ever appears complete and verified.

    Writes to a temporary file beside ``dest`` and renames it into place, so a failed, killed or
    corrupt download never leaves a partial file where ``locate`` would find it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            # disable=None hides the bar when not on a terminal (CI logs); no bar without a known size.
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None if total else True) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())  # the rename must not publish data still only in the page cache
        actual = digest.hexdigest()
        if actual != sha256:
            raise ChecksumError(f"checksum mismatch for download {url}: expected sha256 {sha256}, got {actual}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful rename
    return dest


# locate() takes a ``download: bool`` argument that shadows the function inside it.
_download = download


def _writable_dir(dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    return None


def locate(
    remote: RemoteFile,
    data_dir: str | os.PathLike[str] | None = None,
    system_paths: Sequence[Path] = (),
    download: bool = True,
) -> Path:
    """Return a verified local path for ``remote``; see the module docstring for the search order.

    Raises ChecksumError when a found or downloaded file has the wrong hash (never silently skipped:
    a wrong file is a problem the user must see), DataNotFoundError when nothing works.
    """
    dirs = data_dirs(data_dir)
    candidates = [d / remote.relpath for d in dirs] + [Path(p) for p in system_paths]
    for path in candidates:
        if path.is_file():
            return _verify(path, remote.sha256)

    if remote.url is None:
        download_part = "no download source is known for it"
    elif not download:
        download_part = f"or allow the download from {remote.url} (download=False)"
    else:
        target_dir = _writable_dir(dirs)
        if target_dir is None:
            reason = f"no writable data dir among {', '.join(map(str, dirs))}"
        else:
            assert remote.sha256 is not None  # guaranteed by RemoteFile.__post_init__ when url is set
            try:
                return _download(remote.url, target_dir / remote.relpath, remote.sha256)
            except OSError as err:  # URLError, timeouts and disk errors all derive from OSError
                reason = f"{type(err).__name__}: {err}"
        download_part = f"or allow the download from {remote.url} (failed: {reason})"

    tried_dirs = ", ".join(str(d / remote.relpath) for d in dirs)
    parts = [f"{remote.relpath} not found: set {ENV_VAR} or data_dir to a folder holding it (tried: {tried_dirs})"]
    if remote.package or system_paths:
        tried_system = ", ".join(str(p) for p in system_paths) or "no system path"
        package = f"install the {remote.package} package" if remote.package else "install it"
        parts.append(f"{package} (tried: {tried_system})")
    parts.append(download_part)
    raise DataNotFoundError(_one_line(", ".join(parts)))
