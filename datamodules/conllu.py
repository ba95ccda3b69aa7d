"""Universal Dependencies English-EWT for UPOS tagging: one universal part-of-speech tag per token.

Batches are ``(words, tags, lengths, chars)``: words LongTensor [batch, T] of word ids (0 = <pad>, 1 = <unk>),
tags LongTensor [batch, T] of UPOS ids with -100 (cross_entropy's ignore_index) at padding, lengths
LongTensor [batch] of real token counts, chars LongTensor [batch, T, L] of each token's character ids (case kept,
0 = <pad>, 1 = <unk>; at most ``MAX_WORD_CHARS`` per token, a token's first ones). The official train/dev/test
split is used as is.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from datamodules.checks import check_bool, check_int, check_optional_int
from datamodules.loaders import Collate, SamplerFactory, SplitLoaders, resolve_workers
from datamodules.sources import DataNotFoundError, RemoteFile, data_dirs, locate

IGNORE_INDEX = -100
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1: the tagger's embeddings use padding_idx=0
MAX_WORD_CHARS = 30  # longer tokens (URLs, e-mail addresses) keep their first 30 characters
Sentence = tuple[list[str], list[str]]  # (FORMs, UPOS tags)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# UD_English-EWT pinned at commit 15d613d8447b (2025-05). The gzipped copies (checksums of
# /work/shared/datasets/SHA256SUMS) count wherever a data dir holds them; a download fetches the plain
# .conllu from the repository. Dev and test there are the released files: their download checksum is
# the sha256 of our decompressed copies. The train file there is the release as well, whereas our copy
# was rebuilt from the repository's sources (official file list, same sentence count, never compared byte
# for byte); its pinned hash is that of our copy, so a differing release fails loudly with ChecksumError
# rather than silently changing the benchmark.
EWT_URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b/"
EWT_FILES: dict[str, tuple[str, str]] = {  # split -> (sha256 of .conllu.gz copy, sha256 of plain .conllu)
    "train": ("f6fe79eb00bf7475d32dbf94c106f6c051146a2470b4145bfb028d1e0faba7f1",
              "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
    "dev": ("0670eb9aed308418057e2b673e181d16663b68e23f0535a251951f0258ce0a32",
            "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
    "test": ("ff86f236788255965c692ce596847336a75585e56571ac4415b5a79ab1aac2c4",
             "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
}
SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}  # our split name -> UD's
# Raw text -> tokens close to EWT's own: negation and the clitics 's 're 've 'll 'd 'm split off ("don't" -> do n't),
# hyphenated words and decimals kept whole, any other punctuation mark its own token.
TOKEN_PATTERN = r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)+|\w+(?:-\w+)*|[^\w\s]"
# The 17 universal POS tags (https://universaldependencies.org/u/pos/), sorted: full EWT train has all of
# them. Fixed rather than read from train, so a ``limit``-ed subset keeps the same tag ids and num_tags.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X")


# --- CoNLL-U --------------------------------------------------------------------------------------
def parse_conllu(text: str) -> list[Sentence]:
    """Sentences of (FORM, UPOS) from CoNLL-U text (https://universaldependencies.org/format.html).

    Comment lines (#) are skipped, and so are multi-word token ranges (``1-2``: the surface token
    "don't" above its syntactic words "do" + "n't", which carry the tags) and empty nodes (``1.1``:
    enhanced-graph nodes with no surface form). A blank line ends a sentence.
    """
    sentences: list[Sentence] = []
    forms: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if forms:
                sentences.append((forms, tags))
                forms, tags = [], []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ValueError(f"CoNLL-U line {lineno}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        forms.append(cols[1])
        tags.append(cols[3])
    if forms:  # a file without the final blank line
        sentences.append((forms, tags))
    return sentences


def read_conllu(path: Path) -> list[Sentence]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: the shared copies are gzipped, downloads are plain
        raw = gzip.decompress(raw)
    return parse_conllu(raw.decode("utf-8"))


def locate_ewt(split: str, data_dir: str | None, download: bool) -> Path:
    """The gzipped copy in a data dir if any holds it, else the plain file (found or downloaded)."""
    gz_sha, plain_sha = EWT_FILES[split]
    name = f"ud_ewt/en_ewt-ud-{split}.conllu"
    gz = RemoteFile(name + ".gz", url=None, sha256=gz_sha)
    if any((d / gz.relpath).is_file() for d in data_dirs(data_dir)):
        return locate(gz, data_dir, download=False)  # verifies the checksum
    plain = RemoteFile(name, url=f"{EWT_URL}en_ewt-ud-{split}.conllu", sha256=plain_sha)
    try:
        return locate(plain, data_dir, download=download)
    except DataNotFoundError as err:
        raise DataNotFoundError(f"{err} (a gzipped {gz.relpath} in those folders also counts)") from None


# --- datasets -------------------------------------------------------------------------------------
class TaggedDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Sentences as id lists; tensors are made per item (building ~10^4 tiny tensors up front is slow)."""

    def __init__(self, words: list[list[int]], tags: list[list[int]], chars: list[list[list[int]]]) -> None:
        self.words, self.tags, self.chars = words, tags, chars

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chars = char_matrix(self.chars[i])  # [length, L]
        return torch.tensor(self.words[i]), torch.tensor(self.tags[i]), chars


def char_matrix(tokens: list[list[int]]) -> torch.Tensor:
    """Character ids of each token, right-padded with 0: [tokens, longest token (at most MAX_WORD_CHARS)]."""
    width = max((len(t) for t in tokens), default=1)
    out = torch.zeros(len(tokens), min(max(width, 1), MAX_WORD_CHARS), dtype=torch.long)
    for j, ids in enumerate(tokens):
        ids = ids[:MAX_WORD_CHARS]
        out[j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def char_ids(word: str, ctoi: dict[str, int]) -> list[int]:
    return [ctoi.get(c, 1) for c in word[:MAX_WORD_CHARS]]


def tag_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Batch:
    words, tags, chars = zip(*batch)
    lengths = torch.tensor([len(w) for w in words])  # [batch]
    x = pad_sequence(list(words), batch_first=True, padding_value=0)  # [batch, T], 0 = <pad>
    y = pad_sequence(list(tags), batch_first=True, padding_value=IGNORE_INDEX)  # [batch, T]
    c = torch.zeros(len(words), x.shape[1], max(m.shape[1] for m in chars), dtype=torch.long)  # [batch, T, L]
    for b, m in enumerate(chars):
        c[b, : m.shape[0], : m.shape[1]] = m
    return x, y, lengths, c


class UDPOSDataModule(SplitLoaders, pl.LightningDataModule):
    """UD English-EWT UPOS tagging (12,544 / 2,001 / 2,077 sentences: official train / dev / test).

    Vocabulary: train words seen >= ``min_freq`` times (after lowercasing if ``lowercase``), sorted by
    frequency then spelling, after <pad> and <unk>; rarer and unseen words map to <unk>. Tag set: the
    17 UPOS tags in sorted order (all occur in train). ``limit`` keeps the first N sentences of each split,
    and the vocabulary then comes from those N train sentences (a tiny, self-consistent preset).
    """

    # The word list, its case rule and the tokenizer go into the model too, so its checkpoint tags raw text alone.
    MODEL_ARGS = ("vocab_size", "num_tags", "tag_names", "words", "lowercase", "token_pattern", "chars")

    def __init__(self, batch_size: int = 32, min_freq: int = 2, lowercase: bool = True, data_dir: str | None = None,
                 limit: int | None = None, num_workers: int | None = None, download: bool = True) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("min_freq", min_freq, 1)
        check_optional_int("limit", limit, 1)
        check_bool("lowercase", lowercase)
        check_bool("download", download)
        self.save_hyperparameters()
        self.batch_size, self.min_freq, self.lowercase = batch_size, min_freq, lowercase
        self.data_dir, self.limit, self.download = data_dir, limit, download
        self.num_workers = resolve_workers(num_workers)
        self._paths: dict[str, Path] = {}
        self._sentences: dict[str, list[Sentence]] = {}
        self._datasets: dict[str, TaggedDataset] = {}
        self.words: list[str] = []
        self.chars: list[str] = []
        self.tag_names: list[str] = []

    @classmethod
    def from_sentences(cls, sentences: dict[str, list[Sentence]], **kwargs: Any) -> UDPOSDataModule:
        """A datamodule over given {"train"|"val"|"test": sentences}, e.g. parsed from a test string."""
        dm = cls(**kwargs)
        dm._sentences = {k: list(v[: dm.limit] if dm.limit else v) for k, v in sentences.items()}
        return dm

    # --- files and vocabulary ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        if not self._sentences:
            for split, ud in SPLIT_FILES.items():
                self._paths[split] = locate_ewt(ud, self.data_dir, self.download)

    def _load(self) -> dict[str, list[Sentence]]:
        if not self._sentences:
            self.prepare_data()
            self._sentences = {k: read_conllu(p)[: self.limit] if self.limit else read_conllu(p)
                               for k, p in self._paths.items()}
        return self._sentences

    def _norm(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        sentences = self._load()
        counts = Counter(self._norm(w) for forms, _ in sentences["train"] for w in forms)
        kept = sorted((w for w, c in counts.items() if c >= self.min_freq), key=lambda w: (-counts[w], w))
        self.words = [PAD, UNK] + kept
        # Characters keep their case (a capital says much about a proper noun): every one seen in train.
        self.chars = [PAD, UNK] + sorted({c for forms, _ in sentences["train"] for w in forms for c in w})
        self.tag_names = list(UPOS)
        stoi = {w: i for i, w in enumerate(self.words)}
        ctoi = {c: i for i, c in enumerate(self.chars)}
        ttoi = {t: i for i, t in enumerate(self.tag_names)}
        for split, sents in sentences.items():
            unknown = sorted({t for _, tags in sents for t in tags} - ttoi.keys())
            if unknown:
                raise ValueError(f"{split} has tags {unknown} that are not universal POS tags")
            words = [[stoi.get(self._norm(w), 1) for w in forms] for forms, _ in sents]
            tags = [[ttoi[t] for t in tags] for _, tags in sents]
            chars = [[char_ids(w, ctoi) for w in forms] for forms, _ in sents]
            self._datasets[split] = TaggedDataset(words, tags, chars)

    def model_args(self) -> dict[str, Any]:
        self.setup()
        return {"vocab_size": len(self.words), "num_tags": len(self.tag_names), "tag_names": list(self.tag_names),
                "words": list(self.words), "lowercase": self.lowercase, "token_pattern": TOKEN_PATTERN,
                "chars": list(self.chars)}

    def sentences(self, split: str) -> list[Sentence]:
        return list(self._load()[split])

    # --- loaders ----------------------------------------------------------------------------------
    def _dataset(self, split: str) -> TaggedDataset:
        self.setup()
        return self._datasets[split]

    def _collate(self) -> Collate:
        return tag_collate

    def _sampler(self, split: str) -> SamplerFactory | None:
        if split == "train":
            return None  # the seeded epoch shuffle
        # Evaluation in length order: far less padding, and accuracy does not depend on order.
        words = self._dataset(split).words
        return lambda seed: sorted(range(len(words)), key=lambda i: len(words[i]))

    # --- provenance -------------------------------------------------------------------------------
    @functools.cached_property
    def _data_digest(self) -> str:
        # Over the parsed content, so the gzipped and the plain copy of one file hash alike.
        return hashlib.sha256(json.dumps(self._load(), sort_keys=True).encode()).hexdigest()

    def content_hash(self) -> str:
        settings = {"class": type(self).__name__, "data": self._data_digest, "min_freq": self.min_freq,
                    "lowercase": self.lowercase, "limit": self.limit}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        self.setup()
        sents = self._load()
        return {
            "name": "ud_ewt",
            "source": {k: str(p) for k, p in self._paths.items()} or "injected sentences",
            "url": EWT_URL,
            "splits": {k: {"sentences": len(v), "tokens": sum(len(f) for f, _ in v)} for k, v in sents.items()},
            "split_rule": f"official UD train/dev/test as val=dev; limit={self.limit} first sentences per split",
            "vocab_size": len(self.words),
            "vocab_rule": f"train words with count >= {self.min_freq}, lowercase={self.lowercase}, + <pad>, <unk>",
            "chars": f"{len(self.chars)}: every character of train (case kept) + <pad>, <unk>; first "
                     f"{MAX_WORD_CHARS} per token",
            "tag_names": list(self.tag_names),
        }
