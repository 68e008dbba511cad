"""The networks the optimizers train: today the deep auto-encoders of the paper's appendix D
(:mod:`kfac_bench.models.autoencoders`). The library's part of the harness's problems: a model
knows nothing of datasets, optimizers or run folders."""
from .autoencoders import ACTIVATIONS, INITS, build_autoencoder, build_mlp

__all__ = ["ACTIVATIONS", "INITS", "build_autoencoder", "build_mlp"]
