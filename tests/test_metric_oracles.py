"""Every ranked number a model publishes, computed a second way: the suite's own path (a model run through
Lightning's test loop, as ``archbench train`` runs it) against an independent count on small real inputs.

``ORACLES`` below lists, for each ranked ``test/`` key of the metric vocabulary, the tests that check it
against such an oracle (a library's own API, a count by hand, a closed form); ``NO_ORACLE_YET`` lists the
keys still without one, with what the oracle would be. A new metric adds its row, and its test, in one of
the two: ``test_every_ranked_metric_names_its_oracle`` fails for a key in neither. (The aggregation of these
numbers over seeds, metrics.json and the ledger, is checked in tests/test_published_numbers.py and
tests/test_published_ledger.py.)
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import ROOT

ORACLES: dict[str, tuple[str, ...]] = {
    "test/bleu": ("test_metric_oracles.py::test_bleu_is_sacrebleus_on_a_hand_counted_corpus",
                  "test_metric_oracles.py::test_seq2seq_logs_the_bleu_of_its_hypotheses_against_the_references"),
    "test/loss": ("test_metric_oracles.py::test_char_lm_loss_is_a_count_by_hand_of_the_text",
                  "test_metric_oracles.py::test_char_lm_loss_is_the_per_character_mean_over_padded_batches",
                  "test_metric_oracles.py::test_seq2seq_logs_the_bleu_of_its_hypotheses_against_the_references",
                  "test_metric_oracles.py::test_upos_accuracy_is_a_direct_count_of_right_tags"),
    "test/bpc": ("test_metric_oracles.py::test_char_lm_loss_is_a_count_by_hand_of_the_text",),
    "test/ppl": ("test_metric_oracles.py::test_seq2seq_logs_the_bleu_of_its_hypotheses_against_the_references",),
    "test/acc": ("test_metric_oracles.py::test_upos_accuracy_is_a_direct_count_of_right_tags",),
    "test/fid": ("test_fid.py::test_isotropic_gaussians_match_the_closed_form",
                 "test_fid.py::test_identical_feature_sets_give_zero",
                 "test_gan.py::test_test_fid_and_floor_are_means_over_draws_and_disjoint_slices"),
    "test/is": ("test_fid.py::test_confident_uniform_predictions_score_k", "test_fid.py::test_identical_predictions_score_one"),
    "test/nll_k{k}": ("test_vae.py::test_iw_bound_is_exact_with_the_true_posterior_and_converges_with_the_prior",),
    "test/bpd": ("test_diffusion.py::test_bound_of_the_exact_denoiser_matches_a_hand_sum",),
    "test/seed_loss": ("test_vae.py::test_seed_loss_equals_a_hand_computation",),
    "test/d_loss": ("test_gan.py::test_objective_matches_a_hand_computation",),
    "test/cycle_l1": ("test_pix2pix_cyclegan.py::test_cycle_loss_is_zero_for_identity_generators",),
    "test/cond_acc": ("test_cgan.py::test_conditional_accuracy_matches_a_direct_count",),
    "test/bleu_greedy": ("test_metric_oracles.py::test_seq2seq_logs_the_bleu_of_its_hypotheses_against_the_references",),
    "test/loss_valtest": ("test_metric_oracles.py::test_char_lm_loss_over_val_and_test_together_is_a_count_by_hand",),
}
NO_ORACLE_YET: dict[str, str] = {
    "test/l1": "pix2pix's L1 against a numpy mean |G(x) - y| on fixed images",
    "test/ssim": "against skimage.metrics.structural_similarity on fixed images",
    "test/success_ab": "against a direct count of the frozen classifier's labels on fixed translations",
    "test/success_ba": "as test/success_ab",
    "test/fid_ab": "DomainFID's closed-form check (test/fid) applied to CycleGAN's translated sets",
    "test/fid_ba": "as test/fid_ab",
    "test/fid_ratio": "mean test/fid over mean test/fid_floor recomputed from the per-draw values",
    "test/elbo": "against torch.distributions log-densities of one fixed draw",
    "test/recon": "as test/elbo",
}


# --- the registry ---------------------------------------------------------------------------------------------
def _ranked_test_keys() -> set[str]:
    from benchmarks.core.metric_keys import METRIC_KEYS

    return {row.key for row in METRIC_KEYS if row.key.startswith("test/") and row.direction in ("min", "max")}


def _test_names(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_every_ranked_metric_names_its_oracle() -> None:
    ranked = _ranked_test_keys()
    assert not set(ORACLES) & set(NO_ORACLE_YET)
    assert sorted(ranked - set(ORACLES) - set(NO_ORACLE_YET)) == [], "add the key's oracle test to ORACLES"
    assert sorted((set(ORACLES) | set(NO_ORACLE_YET)) - ranked) == [], "a listed key is no longer a ranked test key"
    for key, tests in ORACLES.items():
        for test in tests:
            file, name = test.split("::")
            assert name in _test_names(ROOT / "tests" / file), f"{key}: {test} does not exist"


# --- BLEU -------------------------------------------------------------------------------------------------------
# Two hypotheses that differ from their references, counted by hand (lowercased, 13a-tokenized: plain words):
#   n-gram matches (clipped) / hypothesis n-grams:  1: 5+5 / 6+6   2: 3+3 / 5+5   3: 2+1 / 4+4   4: 1+0 / 3+3
#   ("the" is clipped to 1 in the first pair), hypothesis length 12, reference length 13, so
#   BLEU = 100 * exp(1 - 13/12) * (10/12 * 6/10 * 3/8 * 1/6) ** (1/4) = 100 * exp(-1/12) * 2 ** (-5/4).
HYPS = ["The cat sat on the mat", "Two dogs play in the snow"]
REFS = ["the cat sat on a mat", "two dogs are playing in the snow"]
HAND_BLEU = 100 * math.exp(-1 / 12) * 2 ** (-5 / 4)  # 38.683...
# The first hypothesis right, the second as above: 1: 6+5 / 12, 2: 5+3 / 10, 3: 4+1 / 8, 4: 3+0 / 6, lengths 12
# and 13: BLEU = 100 * exp(-1/12) * (11/12 * 8/10 * 5/8 * 3/6) ** (1/4) = 100 * exp(-1/12) * (11/48) ** (1/4).
HYPS_2 = ["The cat sat on a mat", "Two dogs play in the snow"]
HAND_BLEU_2 = 100 * math.exp(-1 / 12) * (11 / 48) ** (1 / 4)  # 63.4...


def test_bleu_is_sacrebleus_on_a_hand_counted_corpus() -> None:
    """What protects ``decoding.corpus_bleu`` from scoring hypotheses against themselves, and its signature."""
    import sacrebleu

    from lightning_modules.recurrent.decoding import bleu_signature, corpus_bleu

    assert corpus_bleu(HYPS, REFS) == pytest.approx(HAND_BLEU, rel=1e-12)
    direct = sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True)
    assert direct.counts == [10, 6, 3, 1] and direct.totals == [12, 10, 8, 6]
    assert (direct.sys_len, direct.ref_len) == (12, 13) and direct.score == pytest.approx(HAND_BLEU, rel=1e-12)
    assert corpus_bleu(REFS, REFS) == pytest.approx(100.0) and corpus_bleu(HYPS[::-1], REFS) < 5
    second = sacrebleu.corpus_bleu(HYPS_2, [REFS], lowercase=True)
    assert second.counts == [11, 8, 5, 3] and second.totals == [12, 10, 8, 6]
    assert corpus_bleu(HYPS_2, REFS) == pytest.approx(HAND_BLEU_2, rel=1e-12)
    assert bleu_signature() == f"nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"


class _PairsData(pl.LightningDataModule):
    """Two sentence pairs as one batch (src, src_len, tgt) and their raw references, like Multi30kDataModule."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], refs: list[str]) -> None:
        super().__init__()
        self.batch, self.refs = batch, refs

    def references(self, split: str) -> list[str]:
        return list(self.refs)

    def _loader(self) -> DataLoader:
        return DataLoader([self.batch], batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()


def test_seq2seq_logs_the_bleu_of_its_hypotheses_against_the_references(monkeypatch: pytest.MonkeyPatch,
                                                                          one_thread: None) -> None:
    """What protects Seq2Seq's logged BLEU from ``corpus_bleu(hyps, hyps)``: the hypotheses are fixed (HYPS), so
    the logged val and test BLEU must be the hand count; its loss and perplexity are a direct sum of the
    teacher-forced token NLLs, one sentence at a time."""
    from lightning_modules.recurrent.decoding import BOS, EOS, PAD, SPECIALS
    from lightning_modules.recurrent.seq2seq import Seq2Seq

    torch.manual_seed(0)
    itos = list(SPECIALS) + [f"w{i}" for i in range(12)]
    model = Seq2Seq(src_vocab_size=20, tgt_vocab_size=len(itos), tgt_itos=itos, embed_dim=8, hidden_size=8,
                    num_layers=1, dropout=0.0, beam_size=2, max_decode_len=5, sample_count=0)
    src = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]])  # [batch, S]
    src_len = torch.tensor([4, 3])
    tgt = torch.tensor([[BOS, 4, 5, 6, 7, EOS], [BOS, 8, 9, EOS, PAD, PAD]])  # [batch, T]
    # greedy decodes (beam width 1: val, and test's bleu_greedy) say HYPS, beam search (test) says HYPS_2
    monkeypatch.setattr(model, "translate", lambda s, sl, beam_size=None: list((HYPS if beam_size == 1 else HYPS_2)
                                                                               [: s.size(0)]))
    dm = _PairsData((src, src_len, tgt), REFS)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert val["val/bleu"] == pytest.approx(HAND_BLEU, rel=1e-6) and "val/bleu_greedy" not in val
    assert test["test/bleu"] == pytest.approx(HAND_BLEU_2, rel=1e-6)
    assert test["test/bleu_greedy"] == pytest.approx(HAND_BLEU, rel=1e-6)
    settings = model.metric_settings()
    assert settings["bleu_sentences"] == 2 and settings["bleu_references"] == "raw references (cased, untokenized)"

    nll, tokens = 0.0, 0
    with torch.no_grad():
        for row, n in ((0, 6), (1, 4)):
            logits = model.net(src[row : row + 1, : int(src_len[row])], src_len[row : row + 1], tgt[row : row + 1, : n - 1])
            logp = logits[0].log_softmax(-1)  # [n - 1, vocab]
            nll -= float(sum(logp[t, int(tgt[row, t + 1])] for t in range(n - 1)))
            tokens += n - 1
    assert tokens == 8
    assert test["test/loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert test["test/ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)


# --- per-character loss -------------------------------------------------------------------------------------------
def _fixed_distribution_lm(vocab: str, probs: dict[str, float]) -> torch.nn.Module:
    """A char LM whose every prediction is ``probs``, whatever it has read: the output layer's weights are 0 and
    its bias log p, so the loss of a text is -sum over its characters of log p(c), a count by hand."""
    from lightning_modules.recurrent.char_lm import CharLM

    model = CharLM(vocab=vocab, end_symbol="\n", hidden_size=4, sample_count=0)
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.tensor([math.log(probs[c]) for c in vocab]))
    return model


def _trainer() -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_char_lm_loss_is_a_count_by_hand_of_the_text(one_thread: None) -> None:
    """test/loss and test/bpc of the hello language against its characters counted by hand."""
    from datamodules.text import HelloDataModule

    # The test split is the ten words, each followed by "\n": 42 target characters, counted by hand:
    #   h: hello hell hole heel he hoe oh = 7;  e: hello hell hole heel(2) eel(2) he hoe = 9;
    #   l: hello(2) hell(2) hole heel eel loo lo = 9;  o: hello hole hoe loo(2) lo oh = 7;  "\n": 10.
    counts = {"h": 7, "e": 9, "l": 9, "o": 7, "\n": 10}
    assert Counter("".join(w + "\n" for w in HelloDataModule.WORDS)) == counts
    probs = {"h": 0.1, "e": 0.3, "l": 0.25, "o": 0.15, "\n": 0.2}
    hand = -sum(n * math.log(probs[c]) for c, n in counts.items()) / 42
    dm = HelloDataModule(batch_size=3)  # batches of 3, 3, 3 and 1 words of unequal length: padding in each
    model = _fixed_distribution_lm(dm.vocab, probs)
    test = _trainer().test(model, datamodule=dm, verbose=False)[0]
    assert test["test/loss"] == pytest.approx(hand, rel=1e-6)
    assert test["test/bpc"] == pytest.approx(hand / math.log(2), rel=1e-6)
    settings = model.metric_settings()
    assert (settings["loss_unit"], settings["bpc"]) == ("nats per character", "loss / ln 2")


def test_char_lm_loss_over_val_and_test_together_is_a_count_by_hand(one_thread: None) -> None:
    """tiny-shakespeare's test pass tags each window val (0) or test (1): test/loss counts the test windows,
    test/loss_valtest both. Three windows of a tiny text, one padded, counted by hand."""
    from lightning_modules.recurrent.char_lm import IGNORE

    vocab = "\nehlo"
    probs = {"h": 0.1, "e": 0.3, "l": 0.25, "o": 0.15, "\n": 0.2}
    model = _fixed_distribution_lm(vocab, probs)
    ids = {c: i for i, c in enumerate(vocab)}
    targets = ["hell", "eel\n", "oh"]  # val window; test windows (the last one padded)
    y = torch.full((3, 4), IGNORE)  # [batch, time]
    for row, text in enumerate(targets):
        y[row, : len(text)] = torch.tensor([ids[c] for c in text])
    x = torch.zeros(3, 4, dtype=torch.long)  # what the model reads does not matter to it
    batch = (x, y, torch.tensor([0, 1, 1]))
    # all three: h 2, e 3, l 3, o 1, "\n" 1 (10 characters); the test windows alone: h 1, e 2, l 1, o 1, "\n" 1 (6)
    both = {"h": 2, "e": 3, "l": 3, "o": 1, "\n": 1}
    test_only = {"h": 1, "e": 2, "l": 1, "o": 1, "\n": 1}
    assert Counter("".join(targets)) == both and Counter("".join(targets[1:])) == test_only
    hand = {name: -sum(n * math.log(probs[c]) for c, n in counts.items()) / sum(counts.values())
            for name, counts in (("both", both), ("test", test_only))}
    test = _trainer().test(model, dataloaders=DataLoader([batch], batch_size=None), verbose=False)[0]
    assert test["test/loss_valtest"] == pytest.approx(hand["both"], rel=1e-6)
    assert test["test/loss"] == pytest.approx(hand["test"], rel=1e-6)
    assert test["test/bpc"] == pytest.approx(hand["test"] / math.log(2), rel=1e-6)


def test_char_lm_loss_is_the_per_character_mean_over_padded_batches(one_thread: None) -> None:
    """A trained-from-nothing LSTM's test/loss over padded batches against the sum of -log p over each word
    alone (no padding), divided by the characters: a padded target or a mean of batch means would differ."""
    from datamodules.text import HelloDataModule
    from lightning_modules.recurrent.char_lm import CharLM

    dm = HelloDataModule(batch_size=4)
    torch.manual_seed(3)
    model = CharLM(**dm.model_args(), hidden_size=8, sample_count=0)
    test = _trainer().test(model, datamodule=dm, verbose=False)[0]
    total, chars = 0.0, 0
    with torch.no_grad():
        for word in HelloDataModule.WORDS:
            ids = dm.encode("\n" + word + "\n")
            logits, _ = model(torch.tensor([ids[:-1]]))  # [1, len, vocab]
            logp = logits[0].log_softmax(-1)
            total -= float(sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1)))
            chars += len(ids) - 1
    assert chars == 42
    assert test["test/loss"] == pytest.approx(total / chars, rel=1e-5)


# --- UPOS accuracy ------------------------------------------------------------------------------------------------
# Real CoNLL-U (two sentences of UD English-EWT's style), including a multiword token and an empty node that
# carry no UPOS of their own.
CONLLU = """# sent_id = a
1	The	the	DET	DT	_	2	det	_	_
2	dogs	dog	NOUN	NNS	_	3	nsubj	_	_
3-4	can't	_	_	_	_	_	_	_	_
3	ca	can	AUX	MD	_	5	aux	_	_
4	n't	not	PART	RB	_	5	advmod	_	_
5	swim	swim	VERB	VB	_	0	root	_	_
5.1	swims	swim	VERB	VBZ	_	_	_	0:root	_
6	.	.	PUNCT	.	_	5	punct	_	_

# sent_id = b
1	Go	go	VERB	VB	_	0	root	_	_
2	home	home	ADV	RB	_	1	advmod	_	_
3	!	!	PUNCT	.	_	1	punct	_	_

# sent_id = c
1	Dogs	dog	NOUN	NNS	_	2	nsubj	_	_
2	bark	bark	VERB	VBP	_	0	root	_	_
"""


def test_upos_accuracy_is_a_direct_count_of_right_tags(one_thread: None) -> None:
    """test/acc of a bidirectional tagger over padded batches against a count of right tags, sentence by sentence."""
    from datamodules.conllu import UDPOSDataModule, parse_conllu
    from lightning_modules.recurrent.tagger import Tagger

    sents = parse_conllu(CONLLU)
    assert [len(words) for words, _ in sents] == [6, 3, 2]  # 11 tagged tokens; 3-4 and 5.1 carry no tag
    dm = UDPOSDataModule.from_sentences({"train": sents, "val": sents, "test": sents}, batch_size=2, min_freq=1)
    dm.setup()

    def direct_count(model: Tagger) -> tuple[int, int, float]:
        """Right tags, tokens and summed NLL, one sentence at a time (no padding anywhere)."""
        right = tokens = 0
        nll = 0.0
        with torch.no_grad():
            for words, tags in sents:
                ids = torch.tensor([[dm.words.index(w.lower()) if w.lower() in dm.words else 1 for w in words]])
                logits = model(ids, torch.tensor([len(words)]))[0]  # [n, tags]
                gold = torch.tensor([dm.tag_names.index(t) for t in tags])
                right += int((logits.argmax(-1) == gold).sum())
                nll += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
                tokens += len(words)
        return right, tokens, nll

    for seed in range(100):  # an untrained tagger neither all right nor all wrong: a count that can differ
        torch.manual_seed(seed)
        model = Tagger(**dm.model_args(), embed_dim=8, hidden_size=8, num_layers=2, dropout=0.0)
        right, tokens, nll = direct_count(model)
        if 0 < right < tokens:
            break
    assert tokens == 11 and 0 < right < tokens, right
    test = _trainer().test(model, datamodule=dm, verbose=False)[0]
    assert test["test/acc"] == pytest.approx(right / tokens, abs=1e-7)
    assert test["test/loss"] == pytest.approx(nll / tokens, rel=1e-5)
