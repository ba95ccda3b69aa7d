"""The recurrent family: the cells written from their equations (cells.py: Elman, LSTM, peephole LSTM and the
stacked runner; fused.py and kernels.py: the same equations with a hand-derived backward, the fast path),
and the many-to-many models built from them: the char-level LM, encoder-decoder translation, the tagger,
frame-by-frame labelling and the long-lag sequence classifier."""
