"""Published reference numbers on the suite's datasets, shown beside our own rows (never used in tests).

Each anchor names where the number comes from and how it was measured, because a number without its
protocol cannot be compared, and is paired with the one metric of ours measured the same way:

- the BLEU values are corpus BLEU with greedy decoding, so they stand beside our greedy BLEU on test
  (``test/bleu_greedy``), not the beam-search ``test/bleu``;
- the shakespeare values are nanoGPT's validation loss on its own 90/10 split, whose validation text is our
  val and test blocks together; they stand beside our loss over val+test (``test/loss_valtest``), not our
  val loss (the selection set, and the easier half of that text);
- the UPOS value is UDPipe 1.2's tagger with gold tokenisation on the UD 2.5 English-EWT test file, beside
  our ``test/acc`` on the same 2,077 test sentences of a later EWT release (revised annotations, hence "≈").

Each anchor names its task kind (``benchmarks/report/tasks.py``), so a dataset that hosts several tasks shows
an anchor only in the table it belongs to.
"""

from __future__ import annotations

from typing import Any

SEQ2SEQ = "bentrevett/pytorch-seq2seq"
SEQ2SEQ_PROTOCOL = ("Multi30k task 1 test_2016_flickr, de->en, sacrebleu-style corpus BLEU, greedy decoding, "
                    "spaCy tokenisation")
UDPIPE = "ufal/udpipe, doc/manual_model_ud-2.5.t2t (Model Performance: English-EWT, Gold tok)"
UDPIPE_PROTOCOL = ("UPOS accuracy on the UD 2.5 English-EWT test file with gold tokenisation, every word "
                   "(punctuation included); ours reads the same 2,077 test sentences from a later EWT release")
NANOGPT = "karpathy/nanoGPT README"
NANOGPT_PROTOCOL = ("char-level, validation loss in nats/char on nanoGPT's 90/10 split (best checkpoint); that "
                    "validation text is our val split (90-95%) followed by our test split (95-100%)")

ANCHORS: tuple[dict[str, Any], ...] = (
    {"task": "translation", "data": "multi30k", "metric": "test/bleu_greedy", "value": 13.76,
     "model": "2-layer LSTM encoder-decoder", "source": f"{SEQ2SEQ}, notebook 1", "protocol": SEQ2SEQ_PROTOCOL},
    {"task": "translation", "data": "multi30k", "metric": "test/bleu_greedy", "value": 20.61,
     "model": "GRU encoder-decoder with the context at each step", "source": f"{SEQ2SEQ}, notebook 2",
     "protocol": SEQ2SEQ_PROTOCOL},
    {"task": "translation", "data": "multi30k", "metric": "test/bleu_greedy", "value": 28.30,
     "model": "GRU with Bahdanau attention", "source": f"{SEQ2SEQ}, notebook 3", "protocol": SEQ2SEQ_PROTOCOL},
    {"task": "char_lm", "data": "tinyshakespeare", "metric": "test/loss_valtest", "value": 1.47,
     "model": "6-layer GPT (one A100, 3 min)", "source": NANOGPT, "protocol": NANOGPT_PROTOCOL},
    {"task": "char_lm", "data": "tinyshakespeare", "metric": "test/loss_valtest", "value": 1.88, "approx": True,
     "model": "small GPT, nanoGPT's CPU configuration (about 3 min on a laptop)",
     "source": NANOGPT, "protocol": NANOGPT_PROTOCOL},
    {"task": "upos", "data": "ud_ewt", "metric": "test/acc", "value": 0.944, "approx": True,
     "model": "UDPipe 1.2 tagger (UD 2.5 English-EWT model)", "source": UDPIPE, "protocol": UDPIPE_PROTOCOL},
)


def anchors_for(data: str, task: str) -> list[dict[str, Any]]:
    return [a for a in ANCHORS if a["data"] == data and a["task"] == task]
