"""How generated images are judged: the domain classifier (a small CNN trained on the real data, frozen
afterwards) and the FID / IS computed in its feature space."""
