"""Character-level language-modelling data: a toy language, an English word list and tiny-shakespeare.

Every batch is ``(x, y)``: x is a LongTensor [batch, time] of input char ids, y the LongTensor
[batch, time] of next-char targets. Padding positions carry the end symbol's id in x and -100 in y,
cross_entropy's default ignore_index, so padded steps never count in the loss.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from datamodules.char_sequences import IGNORE_INDEX, SequenceDataset, TaggedConcat, WindowDataset, pad_collate
from datamodules.checks import check_bool, check_int, check_optional_int
from datamodules.loaders import Collate, SplitLoaders, resolve_workers
from datamodules.sources import RemoteFile, locate


class CharDataModule(SplitLoaders, pl.LightningDataModule):
    """Shared vocabulary, encoding and loader logic; subclasses build ``self._splits`` in ``setup``."""

    end_symbol: str = "\n"  # "" means free-running text with no end of sequence
    # model_args() supplies these to the model; an experiment may not set them itself.
    MODEL_ARGS = ("vocab", "end_symbol")

    def __init__(self, batch_size: int, num_workers: int | None) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        self.batch_size = batch_size
        self.num_workers = resolve_workers(num_workers)
        self._splits: dict[str, SequenceDataset | WindowDataset] = {}
        self._vocab: str | None = None

    # --- vocabulary -------------------------------------------------------------------------------
    @property
    def vocab(self) -> str:
        """The characters in id order (id = position)."""
        if self._vocab is None:
            self._vocab = self._build_vocab()
        return self._vocab

    def _build_vocab(self) -> str:
        raise NotImplementedError

    @functools.cached_property
    def _stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.vocab)}

    def encode(self, s: str) -> list[int]:
        stoi = self._stoi
        unknown = sorted(set(s) - stoi.keys())
        if unknown:
            raise ValueError(f"characters {unknown!r} are not in the {type(self).__name__} vocabulary")
        return [stoi[c] for c in s]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        vocab = self.vocab
        # -100 marks padding in targets; skipping it lets callers decode y rows directly.
        return "".join(vocab[int(i)] for i in ids if int(i) != IGNORE_INDEX)

    @property
    def pad_id(self) -> int:
        return self._stoi[self.end_symbol] if self.end_symbol else 0

    def model_args(self) -> dict[str, Any]:
        """What a char LM needs to be built for this data."""
        return {"vocab": self.vocab, "end_symbol": self.end_symbol}

    # --- provenance -------------------------------------------------------------------------------
    def _hash_parts(self) -> tuple[bytes, dict[str, Any]]:
        """Raw source bytes and the settings that shape the splits."""
        raise NotImplementedError

    def content_hash(self) -> str:
        """sha256 over the raw data and the split settings: equal hashes mean equal splits."""
        raw, settings = self._hash_parts()
        digest = hashlib.sha256(raw)
        digest.update(json.dumps({"class": type(self).__name__, **settings}, sort_keys=True).encode())
        return digest.hexdigest()

    # --- loaders ----------------------------------------------------------------------------------
    def _dataset(self, split: str) -> SequenceDataset | WindowDataset:
        self.setup("fit")
        return self._splits[split]

    def _collate(self) -> Collate:
        return functools.partial(pad_collate, pad_id=self.pad_id)

    def _split_sizes(self, chars: dict[str, int]) -> dict[str, dict[str, int]]:
        return {name: {"sequences": len(ds), "characters": chars[name]} for name, ds in self._splits.items()}


def _word_sequences(words: Sequence[str], encode: Callable[[str], list[int]]) -> list[list[int]]:
    # The end symbol doubles as the start symbol: x = "\n" + word, y = word + "\n".
    return [encode("\n" + w + "\n") for w in words]


class HelloDataModule(CharDataModule):
    """The toy language of words over {h, e, l, o}: the seed's "hello" character RNN.

    Train, val and test are all the same word list (train repeats it ``repeats`` times per epoch):
    the point is memorising a toy language, not generalising. Every "ee" is followed by "l" (heel,
    eel), so a model that learned the language predicts "l" after "ee" with high probability.
    """

    WORDS: tuple[str, ...] = ("hello", "hell", "hole", "heel", "eel", "he", "hoe", "loo", "lo", "oh")

    def __init__(self, batch_size: int = 16, repeats: int = 64, num_workers: int | None = None) -> None:
        super().__init__(batch_size, num_workers)
        check_int("repeats", repeats, 1)
        self.save_hyperparameters()
        self.repeats = repeats

    def _build_vocab(self) -> str:
        return "".join(sorted(set("".join(self.WORDS)) | {self.end_symbol}))  # "\nehlo"

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        sequences = _word_sequences(self.WORDS, self.encode)
        self._splits = {
            "train": SequenceDataset(sequences * self.repeats),
            "val": SequenceDataset(sequences),
            "test": SequenceDataset(sequences),
        }

    def _hash_parts(self) -> tuple[bytes, dict[str, Any]]:
        return "\n".join(self.WORDS).encode(), {"repeats": self.repeats}

    def describe(self) -> dict[str, Any]:
        self.setup()
        n = sum(map(len, self.WORDS))
        return {
            "name": "hello",
            "source": "builtin word list",
            "words": list(self.WORDS),
            "vocab_size": len(self.vocab),
            "splits": self._split_sizes({"train": n * self.repeats, "val": n, "test": n}),
            "split_rule": f"train = word list x {self.repeats}; val = test = word list once",
        }


def _bucket(word: str) -> int:
    # A hash of the word itself, so a word's split never depends on the list's order or contents.
    return int.from_bytes(hashlib.sha1(word.encode()).digest(), "big")  # = int(hexdigest, 16), without the hex


class WordsDataModule(CharDataModule):
    """English words from Debian's ``wamerican`` list, one word per sequence.

    Keeps words of 2..max_len lowercase ascii letters, deduplicated. Split by sha1(word) % 100:
    < 80 train, < 90 val, else test. ``limit`` keeps the first N of each split in hash order
    (a stable pseudo-random sample, for tiny test presets).
    """

    REMOTE = RemoteFile("words/american-english", url=None, sha256=None, package="wamerican")
    SYSTEM_PATHS = (Path("/usr/share/dict/american-english"),)
    _WORD = re.compile(r"[a-z]+")

    def __init__(
        self,
        batch_size: int = 128,
        max_len: int = 16,
        data_dir: str | None = None,
        limit: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_int("max_len", max_len, 2)
        check_optional_int("limit", limit, 1)
        self.save_hyperparameters()
        self.max_len = max_len
        self.data_dir = data_dir
        self.limit = limit
        self._path: Path | None = None
        self._raw: bytes | None = None
        self._words: dict[str, list[str]] = {}

    def _build_vocab(self) -> str:
        # Fixed by the filter, so the model can be built before the file is read.
        return self.end_symbol + "abcdefghijklmnopqrstuvwxyz"

    def _load(self) -> bytes:
        if self._raw is None:
            self._path = locate(self.REMOTE, self.data_dir, self.SYSTEM_PATHS, download=False)
            self._raw = self._path.read_bytes()
        return self._raw

    def prepare_data(self) -> None:
        self._load()  # fail early, on one process, with the DataNotFoundError that says how to fix it

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        # errors="replace": a stray non-UTF-8 byte only spoils its own word, which the filter drops.
        lines = self._load().decode("utf-8", errors="replace").splitlines()
        words = {w for w in (line.strip() for line in lines) if 2 <= len(w) <= self.max_len and self._WORD.fullmatch(w)}
        splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        buckets = {w: _bucket(w) for w in words}
        for w in sorted(words, key=buckets.__getitem__):  # hash order (sha1 has no ties among these words)
            b = buckets[w] % 100
            splits["train" if b < 80 else "val" if b < 90 else "test"].append(w)
        self._words = {k: v[: self.limit] if self.limit else v for k, v in splits.items()}
        self._splits = {k: SequenceDataset(_word_sequences(v, self.encode)) for k, v in self._words.items()}

    def _hash_parts(self) -> tuple[bytes, dict[str, Any]]:
        return self._load(), {"max_len": self.max_len, "limit": self.limit, "split": "sha1%100:80/10/10"}

    def words(self, split: str) -> list[str]:
        self.setup()
        return list(self._words[split])

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "name": "words",
            "source": str(self._path),
            "vocab_size": len(self.vocab),
            "splits": self._split_sizes({k: sum(map(len, v)) for k, v in self._words.items()}),
            "split_rule": "int(sha1(word), 16) % 100: <80 train, <90 val, else test; "
            f"words of 2..{self.max_len} letters a-z, deduplicated; limit={self.limit} per split",
        }


class TinyShakespeareDataModule(CharDataModule):
    """Karpathy's tiny-shakespeare (1,115,394 chars), free-running text with no end symbol.

    Contiguous split: first 90% of the chars train, next 5% val, last 5% test. Samples are windows
    of seq_len + 1 chars with stride seq_len (x = window[:-1], y = window[1:]); train is shuffled by
    the seeded loader. The vocab is the sorted set of chars of the whole file (65).
    """

    REMOTE = RemoteFile(
        "tinyshakespeare/input.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    )
    FRACTIONS = (0.9, 0.05)  # train, val; test takes the rest
    end_symbol = ""

    def __init__(
        self,
        batch_size: int = 64,
        seq_len: int = 128,
        data_dir: str | None = None,
        download: bool = True,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_int("seq_len", seq_len, 1)
        check_bool("download", download)
        self.save_hyperparameters()
        self.seq_len = seq_len
        self.data_dir = data_dir
        self.download = download
        self._path: Path | None = None
        self._raw: bytes | None = None
        self._chars: dict[str, int] = {}

    def _load(self) -> bytes:
        if self._raw is None:
            self._path = locate(self.REMOTE, self.data_dir, download=self.download)
            self._raw = self._path.read_bytes()
        return self._raw

    def _text(self) -> str:
        return self._load().decode("utf-8")

    def _build_vocab(self) -> str:
        return "".join(sorted(set(self._text())))

    def prepare_data(self) -> None:
        self._load()  # downloads on one process; the atomic rename makes concurrent setups safe anyway

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        text = self._text()
        ids = torch.tensor(self.encode(text), dtype=torch.long)  # [chars]
        n = len(ids)
        n_train = int(n * self.FRACTIONS[0])
        n_val = int(n * self.FRACTIONS[1])
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        self._chars = {k: hi - lo for k, (lo, hi) in bounds.items()}
        self._splits = {k: WindowDataset(ids[lo:hi], self.seq_len) for k, (lo, hi) in bounds.items()}

    def _hash_parts(self) -> tuple[bytes, dict[str, Any]]:
        return self._load(), {"seq_len": self.seq_len, "fractions": list(self.FRACTIONS)}

    def _dataset(self, split: str) -> Any:
        """The test pass also reads the val windows, tagged 0 (test windows 1): the model scores the test split
        alone, and val + test together, the last 10% of the text, which is nanoGPT's validation split."""
        if split == "test":
            self.setup("fit")
            return TaggedConcat([(self._splits["test"], 1), (self._splits["val"], 0)])
        return super()._dataset(split)

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "name": "tinyshakespeare",
            "source": str(self._path),
            "url": self.REMOTE.url,
            "sha256": self.REMOTE.sha256,
            "vocab_size": len(self.vocab),
            "splits": self._split_sizes(self._chars),
            "split_rule": "contiguous chars: first 90% train, next 5% val, last 5% test; "
            f"windows of {self.seq_len + 1} chars with stride {self.seq_len}, short tail dropped; the test pass "
            "also scores val + test together (the last 10%, nanoGPT's validation text)",
        }
