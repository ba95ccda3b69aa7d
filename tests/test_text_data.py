"""Character-level text datamodules and the data locator they rely on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything

from datamodules import DATAMODULES
from datamodules.sources import (
    ENV_VAR,
    ChecksumError,
    DataNotFoundError,
    RemoteFile,
    data_dirs,
    download,
    locate,
)
from datamodules.text import HelloDataModule, TinyShakespeareDataModule, WordsDataModule
from tests.conftest import real_data_dir

DICT = Path("/usr/share/dict/american-english")
needs_dict = pytest.mark.skipif(not DICT.is_file(), reason="wamerican not installed")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own ARCHBENCH_DATA_DIR must not change what these tests find.
    monkeypatch.delenv(ENV_VAR, raising=False)


# --- hello ----------------------------------------------------------------------------------------
def test_hello_vocab_and_shift() -> None:
    dm = HelloDataModule(batch_size=4, repeats=2)
    assert DATAMODULES["hello"] is HelloDataModule
    assert sorted(dm.vocab) == sorted("\nhelo") and len(dm.vocab) == 5
    assert dm.model_args() == {"vocab": dm.vocab, "end_symbol": "\n"}
    dm.setup("fit")
    for x, y in dm.val_dataloader():  # x, y: [batch, time]
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape
        for xr, yr in zip(x, y):
            word = dm.decode(yr)  # y has -100 padding, skipped by decode
            assert word.endswith("\n")
            n = len(word)
            assert dm.decode(xr[:n]) == "\n" + word[:-1]
            assert torch.equal(xr[1:n], yr[: n - 1])  # y is x shifted left by one
            assert (yr[n:] == -100).all() and (xr[n:] == dm.encode("\n")[0]).all()
    assert len(dm.train_dataloader().dataset) == 2 * len(HelloDataModule.WORDS)
    assert json.dumps(dm.describe())


def test_hello_ee_always_followed_by_l() -> None:
    dm = HelloDataModule()
    dm.setup()
    text = "".join(dm.decode(dm.train_dataloader().dataset[i][1]) for i in range(len(HelloDataModule.WORDS)))
    follows = [text[i + 2] for i in range(len(text) - 2) if text[i : i + 2] == "ee"]
    assert follows and set(follows) == {"l"}


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True}, {"repeats": -1}])
def test_hello_rejects_bad_args(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HelloDataModule(**kwargs)


# --- words ----------------------------------------------------------------------------------------
@needs_dict
def test_words_split_deterministic_disjoint_padded() -> None:
    a, b = WordsDataModule(batch_size=8, limit=200), WordsDataModule(batch_size=8, limit=200)
    splits = {name: a.words(name) for name in ("train", "val", "test")}
    assert all(len(v) == 200 for v in splits.values())  # limit applies per split
    assert splits == {name: b.words(name) for name in splits}
    assert a.content_hash() == b.content_hash() != WordsDataModule(limit=100).content_hash()
    sets = [set(v) for v in splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert all(w.isascii() and w.isalpha() and w.islower() and 2 <= len(w) <= 16 for s in sets for w in s)
    x, y = next(iter(a.val_dataloader()))  # [batch, time]
    lengths = torch.tensor([len(w) + 1 for w in splits["val"][:8]])
    assert x.shape[1] == int(lengths.max())
    assert ((y != -100).sum(1) == lengths).all()
    assert (y == -100).any()  # words differ in length, so some positions are padding
    assert a.decode(y[0]) == splits["val"][0] + "\n"
    assert a.decode(a.encode("zebra\n")) == "zebra\n"
    with pytest.raises(ValueError, match="vocabulary"):
        a.encode("Zebra")
    assert json.dumps(a.describe())


@needs_dict
def test_words_full_split_sizes() -> None:
    dm = WordsDataModule()
    sizes = {k: v["sequences"] for k, v in dm.describe()["splits"].items()}
    assert all(n > 0 for n in sizes.values())
    assert sizes["train"] > 5 * sizes["val"]  # ~80/10/10


def test_words_missing_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WordsDataModule, "SYSTEM_PATHS", (tmp_path / "absent",))
    with pytest.raises(DataNotFoundError) as err:
        WordsDataModule(data_dir=str(tmp_path)).prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and "wamerican" in msg and "no download source" in msg


# --- tinyshakespeare ------------------------------------------------------------------------------
def _shakespeare_dir() -> Path:
    return real_data_dir("tinyshakespeare/input.txt")


def test_tinyshakespeare_vocab_and_splits() -> None:
    dm = TinyShakespeareDataModule(batch_size=4, seq_len=32, data_dir=str(_shakespeare_dir()), download=False)
    assert len(dm.vocab) == 65 and dm.model_args()["end_symbol"] == ""
    info = dm.describe()
    n = (_shakespeare_dir() / "tinyshakespeare" / "input.txt").stat().st_size
    assert sum(s["characters"] for s in info["splits"].values()) == n
    assert info["splits"]["train"]["characters"] == int(0.9 * n)
    x, y, tag = next(iter(dm.test_dataloader()))  # [batch, seq_len], and the split tag of each window
    assert x.shape == y.shape == (4, 32) and tag.tolist() == [1, 1, 1, 1]  # test windows first, then val's
    assert torch.equal(x[0, 1:], y[0, :-1]) and torch.equal(x[1, 0], y[0, -1])  # stride seq_len
    windows = dm.test_dataloader().dataset
    assert len(windows) == len(dm._splits["test"]) + len(dm._splits["val"]) and int(windows[len(windows) - 1][2]) == 0
    assert json.dumps(info)


def test_tinyshakespeare_checksum_verified(tmp_path: Path) -> None:
    src = (_shakespeare_dir() / "tinyshakespeare" / "input.txt").read_bytes()
    bad = tmp_path / "tinyshakespeare" / "input.txt"
    bad.parent.mkdir()
    bad.write_bytes(src[:-1] + b"?")
    with pytest.raises(ChecksumError, match="expected sha256"):
        TinyShakespeareDataModule(data_dir=str(tmp_path), download=False).setup()


# --- sources --------------------------------------------------------------------------------------
def _remote(tmp_path: Path, payload: bytes, sha: str | None = None) -> RemoteFile:
    src = tmp_path / "src" / "file.txt"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(payload)
    return RemoteFile("set/file.txt", url=src.as_uri(), sha256=sha or hashlib.sha256(payload).hexdigest())


def test_download_file_url_lands_at_relpath(tmp_path: Path) -> None:
    remote = _remote(tmp_path, b"hello world\n" * 100)
    path = locate(remote, data_dir=tmp_path / "data")
    assert path == tmp_path / "data" / "set" / "file.txt" and path.read_bytes() == b"hello world\n" * 100
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]  # no temp file left behind
    assert locate(remote, data_dir=tmp_path / "data", download=False) == path


def test_download_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    remote = _remote(tmp_path, b"payload", sha="0" * 64)
    with pytest.raises(ChecksumError):
        locate(remote, data_dir=tmp_path / "data")
    dest_dir = tmp_path / "data" / "set"
    assert not dest_dir.exists() or list(dest_dir.iterdir()) == []
    with pytest.raises(ChecksumError):
        download(remote.url, tmp_path / "d" / "x.txt", "0" * 64)
    assert list((tmp_path / "d").iterdir()) == []


def test_not_found_message_names_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    url = (tmp_path / "missing.txt").as_uri()
    remote = RemoteFile("set/file.txt", url=url, sha256="0" * 64, package="some-pkg")
    for allow in (True, False):
        with pytest.raises(DataNotFoundError) as err:
            locate(remote, data_dir=tmp_path / "data", system_paths=[tmp_path / "sys.txt"], download=allow)
        msg = str(err.value)
        assert "\n" not in msg
        for part in (ENV_VAR, str(tmp_path / "env"), str(tmp_path / "data"), url, "some-pkg", "sys.txt"):
            assert part in msg
    assert data_dirs(tmp_path / "data") == [tmp_path / "env", tmp_path / "data"]


def test_local_bad_checksum_is_one_line(tmp_path: Path) -> None:
    remote = _remote(tmp_path, b"right")
    local = tmp_path / "data" / "set" / "file.txt"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"wrong")
    with pytest.raises(ChecksumError) as err:
        locate(remote, data_dir=tmp_path / "data")
    msg = str(err.value)
    assert "\n" not in msg and str(local) in msg and remote.sha256 in msg
    assert hashlib.sha256(b"wrong").hexdigest() in msg
    assert local.read_bytes() == b"wrong"  # a wrong local file is reported, never silently replaced


# --- reproducibility ------------------------------------------------------------------------------
def test_train_loader_reproducible_under_seed_everything() -> None:
    dm = HelloDataModule(batch_size=8)
    seed_everything(0)
    first = next(iter(dm.train_dataloader()))
    seed_everything(0)
    second = next(iter(dm.train_dataloader()))
    seed_everything(1)
    other = next(iter(dm.train_dataloader()))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])
