"""Multi30k German->English sentence pairs for encoder-decoder translation.

Every batch is ``(src, src_len, tgt)``: src a LongTensor [batch, S] of source ids (words + <eos>,
right-padded with <pad> = 0), src_len [batch] the unpadded source lengths, tgt [batch, T] of target ids
``<bos> words <eos>`` right-padded with 0. Train batches are bucketed by source length (Sutskever et al.
2014 batch by length to waste less compute on padding); val and test keep the file order, so the
n-th hypothesis of an epoch lines up with ``references(split)[n]``.

Tokenization (no external tokenizer): lowercase, then the regex ``TOKEN_RE``: decimal numbers, words
with inner hyphens or apostrophes ("t-shirt", "man's"), or one punctuation character. These are the
units sacrebleu's 13a tokenizer also keeps whole, so joining tokens with spaces (``decoding.detokenize``)
scores the same as the raw text. Vocabularies come from the training pairs only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from datamodules.checks import check_bool, check_int, check_optional_int
from datamodules.loaders import Collate, SplitLoaders, resolve_workers, seeded_loader
from datamodules.sampling import EpochShuffleSampler, epoch_seed
from datamodules.sources import RemoteFile, locate

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)
TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:[-'’]\w+)*|[^\w\s]")
TOKENIZER = "lowercase + regex " + TOKEN_RE.pattern  # recorded in describe() and the content hash
BUCKET_BATCHES = 100  # a shuffled chunk of this many batches is sorted by source length, then cut
Pair = tuple[list[int], list[int]]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# multi30k/dataset pinned at the commit that last changed these six files (checked: their sha256 below), not a
# branch, so a later push there cannot change what a download fetches.
MULTI30K_COMMIT = "c9be912dc05a3ebf9ae5bb5f7f58c1791cda43ab"
_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}/data/task1/raw/{{}}"
_SHA256 = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}
SPLIT_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def build_vocab(sentences: Sequence[list[str]], min_freq: int, max_vocab: int | None) -> list[str]:
    """Specials, then tokens seen >= min_freq times by falling count (ties alphabetical); at most max_vocab in all."""
    counts = Counter(tok for sent in sentences for tok in sent)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t))
    itos = list(SPECIALS) + ranked
    return itos[:max_vocab] if max_vocab is not None else itos


def pair_collate(batch: Sequence[Pair]) -> Batch:
    srcs = [torch.tensor(s, dtype=torch.long) for s, _ in batch]
    tgts = [torch.tensor(t, dtype=torch.long) for _, t in batch]
    src = pad_sequence(srcs, batch_first=True, padding_value=PAD)  # [batch, S]
    src_len = torch.tensor([len(s) for s in srcs], dtype=torch.long)  # [batch]
    tgt = pad_sequence(tgts, batch_first=True, padding_value=PAD)  # [batch, T]
    return src, src_len, tgt


class PairDataset(Dataset[Pair]):
    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Pair:
        return self.pairs[i]


class BucketBatchSampler(BatchSampler):
    """Batches of similar source length, reproducible per (seed, epoch).

    The epoch's order comes from ``sampler`` (an EpochShuffleSampler; Lightning calls its ``set_epoch``
    through ``batch_sampler.sampler``). It is cut into chunks of ``chunk`` items, each chunk is sorted
    by length and cut into batches, and the batch order is shuffled again so lengths don't cycle.

    A ``BatchSampler`` with its ``(sampler, batch_size, drop_last)`` signature, so that under DDP
    Lightning rebuilds it around a distributed sampler: each rank buckets its own share of the epoch's
    order, and every rank gets the same number of batches (the distributed sampler pads the shares).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, *,
                 lengths: Sequence[int], chunk: int) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths)
        self.chunk = chunk

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]  # this rank's share under DDP
        sizes = [min(self.chunk, n - i) for i in range(0, n, self.chunk)]
        if self.drop_last:
            return sum(size // self.batch_size for size in sizes)
        return sum(-(-size // self.batch_size) for size in sizes)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        batches: list[list[int]] = []
        for i in range(0, len(order), self.chunk):
            part = sorted(order[i : i + self.chunk], key=self.lengths.__getitem__)  # stable: ties keep shuffle order
            cut = [part[j : j + self.batch_size] for j in range(0, len(part), self.batch_size)]
            batches += [b for b in cut if len(b) == self.batch_size] if self.drop_last else cut
        # EpochShuffleSampler and Lightning's DistributedSamplerWrapper both carry (seed, epoch); the
        # distributed one has the same seed on every rank, so the ranks shuffle their batches alike.
        seed, epoch = getattr(self.sampler, "seed"), getattr(self.sampler, "epoch")
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, offset=1))
        yield from (batches[k] for k in torch.randperm(len(batches), generator=gen).tolist())


class Multi30kDataModule(SplitLoaders, pl.LightningDataModule):
    """Multi30k task 1 (Elliott et al. 2016), German->English: 29,000 / 1,014 / 1,000 pairs.

    ``max_len`` drops training pairs whose source or target has more than max_len tokens (val and test
    are never filtered: BLEU is scored on every test sentence). ``limit`` keeps the first N pairs of each
    split (tiny test presets). Vocabularies are built from the kept training pairs only.
    """

    # The source vocabulary and the tokenizer go into the model too, so its checkpoint translates raw text alone.
    MODEL_ARGS = ("src_vocab_size", "tgt_vocab_size", "tgt_itos", "src_itos", "token_pattern")
    TEST_CORPUS = "multi30k test_2016_flickr"

    def __init__(
        self,
        batch_size: int = 128,
        min_freq: int = 2,
        max_vocab: int | None = None,
        max_len: int = 50,
        data_dir: str | None = None,
        limit: int | None = None,
        num_workers: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("min_freq", min_freq, 1)
        check_int("max_len", max_len, 1)
        check_optional_int("max_vocab", max_vocab, len(SPECIALS) + 1)
        check_optional_int("limit", limit, 1)
        check_bool("download", download)
        self.save_hyperparameters()
        self.batch_size, self.min_freq, self.max_vocab, self.max_len = batch_size, min_freq, max_vocab, max_len
        self.data_dir, self.limit, self.download = data_dir, limit, download
        self.num_workers = resolve_workers(num_workers)
        self._paths: dict[str, Path] = {}
        self._lines: dict[str, tuple[list[str], list[str]]] = {}  # split -> (german lines, english lines)
        self._splits: dict[str, PairDataset] = {}
        self.src_itos: list[str] = []
        self.tgt_itos: list[str] = []
        self._dropped = 0

    # --- raw files --------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if name not in self._paths:
            remote = RemoteFile(f"multi30k/{name}", url=_URL.format(name), sha256=_SHA256[name])
            self._paths[name] = locate(remote, self.data_dir, download=self.download)
        return self._paths[name]

    def _read(self, name: str) -> list[str]:
        return gzip.decompress(self._path(name).read_bytes()).decode("utf-8").splitlines()

    def prepare_data(self) -> None:
        for name in _SHA256:
            self._path(name)  # downloads and verifies once; DataNotFoundError says how to fix a missing file

    def _load_lines(self) -> None:
        for split, stem in SPLIT_FILES.items():
            de, en = self._read(f"{stem}.de.gz"), self._read(f"{stem}.en.gz")
            if len(de) != len(en):
                raise ValueError(f"multi30k {split}: {len(de)} German lines but {len(en)} English lines")
            self._lines[split] = (de[: self.limit], en[: self.limit]) if self.limit else (de, en)

    # --- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        self._load_lines()
        tokens = {k: ([tokenize(s) for s in de], [tokenize(s) for s in en]) for k, (de, en) in self._lines.items()}
        keep = [i for i, (s, t) in enumerate(zip(*tokens["train"])) if len(s) <= self.max_len and len(t) <= self.max_len]
        self._dropped = len(tokens["train"][0]) - len(keep)
        train_de = [tokens["train"][0][i] for i in keep]
        train_en = [tokens["train"][1][i] for i in keep]
        self.src_itos = build_vocab(train_de, self.min_freq, self.max_vocab)
        self.tgt_itos = build_vocab(train_en, self.min_freq, self.max_vocab)
        self._splits["train"] = self._encode(train_de, train_en)
        for split in ("val", "test"):
            self._splits[split] = self._encode(*tokens[split])

    def _encode(self, de: list[list[str]], en: list[list[str]]) -> PairDataset:
        s2i, t2i = self._src_stoi, self._tgt_stoi
        pairs = [([s2i.get(w, UNK) for w in s] + [EOS], [BOS] + [t2i.get(w, UNK) for w in t] + [EOS])
                 for s, t in zip(de, en)]
        return PairDataset(pairs)

    @functools.cached_property
    def _src_stoi(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.src_itos)}

    @functools.cached_property
    def _tgt_stoi(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.tgt_itos)}

    def split(self, name: str) -> PairDataset:
        self.setup()
        return self._splits[name]

    def references(self, split: str) -> list[str]:
        """The raw (untokenized, cased) English lines of a split, in loader order: sacrebleu's references."""
        self.setup()
        return list(self._lines[split][1])

    def sources(self, split: str) -> list[str]:
        """The raw German lines of a split, in loader order."""
        self.setup()
        return list(self._lines[split][0])

    def model_args(self) -> dict[str, Any]:
        self.setup()
        return {"src_vocab_size": len(self.src_itos), "tgt_vocab_size": len(self.tgt_itos), "tgt_itos": list(self.tgt_itos),
                "src_itos": list(self.src_itos), "token_pattern": TOKEN_RE.pattern}

    # --- loaders ----------------------------------------------------------------------------------
    def _dataset(self, split: str) -> PairDataset:
        return self.split(split)

    def _collate(self) -> Collate:
        return pair_collate

    def _loader(self, split: str) -> DataLoader[Batch]:
        if split != "train":
            return super()._loader(split)  # file order: hypotheses line up with references(split)
        dataset = self.split(split)
        lengths = [len(s) for s, _ in dataset.pairs]

        def buckets(seed: int) -> BucketBatchSampler:
            return BucketBatchSampler(EpochShuffleSampler(len(dataset), seed), self.batch_size,
                                      lengths=lengths, chunk=self.batch_size * BUCKET_BATCHES)

        return seeded_loader(dataset, self.batch_size, train=True, num_workers=self.num_workers,
                             collate_fn=pair_collate, batch_sampler=buckets)

    # --- provenance -------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {"min_freq": self.min_freq, "max_vocab": self.max_vocab, "max_len": self.max_len, "limit": self.limit,
                "tokenizer": TOKENIZER}

    def content_hash(self) -> str:
        """sha256 over the six raw files and the settings that shape vocabularies and splits."""
        digest = hashlib.sha256()
        for name in _SHA256:
            digest.update(self._path(name).read_bytes())
        digest.update(json.dumps({"class": type(self).__name__, **self._settings()}, sort_keys=True).encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "name": "multi30k",
            "direction": "de->en",
            "sources": {name: str(path) for name, path in sorted(self._paths.items())},
            "urls": {name: _URL.format(name) for name in _SHA256},
            "sha256": dict(_SHA256),
            "src_vocab_size": len(self.src_itos),
            "tgt_vocab_size": len(self.tgt_itos),
            "splits": {k: {"pairs": len(v)} for k, v in self._splits.items()},
            "train_pairs_dropped_over_max_len": self._dropped,
            "test_corpus": self.TEST_CORPUS,
            **self._settings(),
            "split_rule": "official train / val / test_2016_flickr files; first `limit` pairs of each when set; "
            "train pairs with a side longer than max_len tokens dropped; vocab from kept train pairs, "
            "tokens seen >= min_freq times",
        }
