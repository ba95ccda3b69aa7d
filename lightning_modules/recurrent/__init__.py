"""The recurrent family: the cells written from their equations (cells.py: Elman, LSTM, peephole LSTM), the
stacked runner that trains them with torch's own kernels where the equations are torch's and from the
equations otherwise (stack.py), and the many-to-many models built on it: the char-level LM, encoder-decoder
translation, the tagger, frame-by-frame labelling and the long-lag sequence classifier."""
