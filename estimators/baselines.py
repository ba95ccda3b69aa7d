"""Trivial baselines: what a model that learned nothing about the inputs' structure scores on the same split.

Each is fitted on the training split by counting and scored on the evaluation split exactly as the models
are scored there, so a leaderboard row that does not beat its baseline has learned nothing a count could not:

- ``char_unigram``: every next character predicted from the training text's character frequencies alone
  (no context). Mean cross-entropy per predicted character, in nats, like the char LM's ``test/loss``.
- ``majority_class``: every label predicted as the most frequent training label. Accuracy over all
  labelled items (micro), like the classifiers' and the frame labeller's ``test/acc``.
- ``frequent_tag``: every token tagged with the tag its word form carries most often in training; a form
  never seen in training gets the most frequent tag overall. Token accuracy, like the tagger's ``test/acc``.

Ties go to the smallest label (or tag name), so a baseline is a function of the counts alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


def char_unigram(train_targets: Iterable[int], eval_targets: Iterable[int], vocab_size: int) -> dict[str, float]:
    """Cross-entropy (nats per character) of the add-one unigram model of the training targets.

    p(c) = (n_c + 1) / (N + V): add-one smoothing, so a character that the evaluation text holds and the
    training text lacks costs log(N + V) nats instead of an infinite loss (with about 10^6 training
    characters this moves the value by under 10^-4 nats).
    """
    train, seen = Counter(train_targets), Counter(eval_targets)
    if vocab_size < 1 or any(not 0 <= c < vocab_size for c in (*train, *seen)):
        raise ValueError(f"targets must be ids in [0, {vocab_size}) (ignored positions removed first)")
    n_train, n_eval = sum(train.values()), sum(seen.values())
    if n_train == 0 or n_eval == 0:
        raise ValueError("char_unigram needs training and evaluation targets")
    log_norm = math.log(n_train + vocab_size)
    total = sum(n * (log_norm - math.log(train[c] + 1)) for c, n in seen.items())
    return {"loss": total / n_eval, "bpc": total / n_eval / math.log(2), "n_train": n_train, "n_eval": n_eval}


def majority_class(train_labels: Iterable[int], eval_labels: Iterable[int]) -> dict[str, Any]:
    """Accuracy of always answering the most frequent training label."""
    train, seen = Counter(train_labels), Counter(eval_labels)
    if not train or not seen:
        raise ValueError("majority_class needs training and evaluation labels")
    top = max(sorted(train), key=lambda c: train[c])  # sorted first: a tie goes to the smallest label
    n_eval = sum(seen.values())
    return {"acc": seen[top] / n_eval, "label": top, "n_train": sum(train.values()), "n_eval": n_eval}


Sentence = tuple[Sequence[str], Sequence[str]]  # (word forms, tags)


def frequent_tag(train: Iterable[Sentence], evaluation: Iterable[Sentence]) -> dict[str, Any]:
    """Token accuracy of tagging each word form with its most frequent training tag."""
    per_word: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for forms, tags in train:
        for form, tag in zip(forms, tags, strict=True):
            per_word.setdefault(form, Counter())[tag] += 1
            overall[tag] += 1
    if not overall:
        raise ValueError("frequent_tag needs training sentences")

    def best(counts: Counter[str]) -> str:
        return max(sorted(counts), key=lambda t: counts[t])

    fallback = best(overall)
    choice = {form: best(counts) for form, counts in per_word.items()}
    right = total = unseen = 0
    for forms, tags in evaluation:
        for form, tag in zip(forms, tags, strict=True):
            unseen += form not in choice
            right += choice.get(form, fallback) == tag
            total += 1
    if total == 0:
        raise ValueError("frequent_tag needs evaluation sentences")
    return {"acc": right / total, "unseen_tag": fallback, "unseen_forms": unseen, "n_eval": total,
            "n_train": sum(overall.values())}
