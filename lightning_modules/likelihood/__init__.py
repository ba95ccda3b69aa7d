"""The likelihood family: the Gaussian VAE (the seed's and the standard one), the hierarchical VAE and DDPM
(a hierarchical VAE whose encoders only add noise), and the bounds they share (bounds.py: ELBO terms and
importance-weighted NLL)."""
