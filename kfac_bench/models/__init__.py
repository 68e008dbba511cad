"""The networks the optimizers train: the deep auto-encoders of the paper's appendix D
(:mod:`kfac_bench.models.autoencoders`) and the authors' MNIST CNN auto-encoder
(:mod:`kfac_bench.models.conv_autoencoder`; a dataset config's ``model: {kind: conv_autoencoder}``).
The library's part of the harness's problems: a model knows nothing of datasets, optimizers or run
folders."""
from .autoencoders import ACTIVATIONS, INITS, MODEL_KINDS, build_autoencoder, build_mlp
from .conv_autoencoder import ConvAutoencoder, build_conv_autoencoder

__all__ = ["ACTIVATIONS", "INITS", "MODEL_KINDS", "ConvAutoencoder", "build_autoencoder", "build_conv_autoencoder",
           "build_mlp"]
