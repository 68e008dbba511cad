"""The networks the optimizers train: the deep auto-encoders of the paper's appendix D
(:mod:`kfac_bench.models.autoencoders`) and the authors' MNIST CNN auto-encoder
(:mod:`kfac_bench.models.conv_autoencoder`; a dataset config's ``model: {kind: conv_autoencoder}``), and the
authors' classifiers (:mod:`kfac_bench.models.classifiers`: ``mlp_bn``, ``toynet``, ``deep_linear``,
``cuda_convnet``), all built by :func:`build_model` (= ``build_autoencoder``) from ``model.kind``.
The library's part of the harness's problems: a model knows nothing of datasets, optimizers or run
folders."""
from .autoencoders import ACTIVATIONS, INITS, MODEL_KINDS, build_autoencoder, build_mlp
from .classifiers import CLASSIFIER_KINDS, build_classifier
from .conv_autoencoder import ConvAutoencoder, build_conv_autoencoder

build_model = build_autoencoder   # the dispatch on ``model.kind``, under the name that fits every problem

__all__ = ["ACTIVATIONS", "CLASSIFIER_KINDS", "INITS", "MODEL_KINDS", "ConvAutoencoder", "build_autoencoder",
           "build_classifier", "build_conv_autoencoder", "build_mlp", "build_model"]
