"""Density estimators and derived distributions: fitted in closed form or by scikit-learn-style ``fit``,
not trained by Lightning, so they live apart from the LightningModules.

- density.py: Gaussian MLE, Gaussian mixture (EM), Gaussian KDE with a chosen bandwidth, PCA projection.
- derived.py: distributions derived from a uniform variable, e.g. x = -log z, z ~ U[0,1], is Exp(1).
"""
