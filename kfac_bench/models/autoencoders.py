"""The deep auto-encoders of appendix D, built from a dataset spec (``model.kind: conv_autoencoder``:
the authors' MNIST CNN, :mod:`kfac_bench.models.conv_autoencoder`).

The network outputs the final pre-activation ``z``: the sigmoid of the BCE problems and the
identity of FACES live in the likelihood (``BCEWithLogits`` is the numerically stable form of
"sigmoid output + binary cross-entropy"). Initialisation follows the authors' code: Xavier-uniform
weights, biases 0.01.
"""
from __future__ import annotations

import torch
from torch import nn

from .classifiers import CLASSIFIER_KINDS, build_classifier
from .conv_autoencoder import build_conv_autoencoder

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


INITS = ("xavier_uniform", "reseeded_per_layer")


def build_mlp(layers: list[int], hidden_activation: str = "relu", generator: torch.Generator | None = None,
              init: str = "xavier_uniform", seed: int = 0) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear``: every hidden layer (the code layer included) gets
    ``hidden_activation``; the last Linear is left linear.

    ``init="xavier_uniform"`` draws all layers from one stream (``generator``).
    ``init="reseeded_per_layer"`` emulates the authors' code, which calls ``torch.manual_seed(0)``
    before initialising *each* layer (``apps/mlp_cnn/initializations.py`` lines 7-12 at commit
    97105b6): every layer starts from the same random stream (seeded with ``seed``), so layers of
    equal size get equal weights and the decoder's weights repeat the encoder's numbers.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if len(layers) < 2:
        raise ValueError(f"an MLP needs at least 2 layer sizes, got {list(layers)}")
    try:
        act = ACTIVATIONS[hidden_activation]
    except KeyError:
        raise ValueError(f"unknown hidden_activation {hidden_activation!r}; choose one of {sorted(ACTIVATIONS)}") from None
    modules: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(layers[:-1], layers[1:])):
        linear = nn.Linear(d_in, d_out)
        with torch.no_grad():
            bound = (6.0 / (d_in + d_out)) ** 0.5
            stream = torch.Generator().manual_seed(int(seed)) if init == "reseeded_per_layer" else generator
            linear.weight.uniform_(-bound, bound, generator=stream)
            linear.bias.fill_(0.01)
        modules.append(linear)
        if i < len(layers) - 2:
            modules.append(act())
    return nn.Sequential(*modules)


MODEL_KINDS = ("mlp", "conv_autoencoder") + CLASSIFIER_KINDS


def build_autoencoder(dataset_cfg, seed: int = 0, init: str = "xavier_uniform") -> nn.Module:
    """The dataset's auto-encoder: its ``model.kind`` (default ``mlp``: the paper's deep MLP of
    ``layers``; ``conv_autoencoder``: the authors' MNIST CNN,
    :func:`kfac_bench.models.conv_autoencoder.build_conv_autoencoder`, with the other keys of
    ``model`` as its arguments; a classifier kind: :func:`kfac_bench.models.classifiers.build_classifier`,
    the same way). The one model dispatch of the harness, whatever the problem's task."""
    model = dict(dataset_cfg.get("model") or {})
    kind = model.pop("kind", "mlp")
    if kind == "conv_autoencoder":
        return build_conv_autoencoder(**model, seed=seed, init=init)
    if kind in CLASSIFIER_KINDS:
        return build_classifier(kind, **model, seed=seed, init=init)
    if kind != "mlp" or model:
        raise ValueError(f"dataset.model: kind {kind!r} with {sorted(model)}; choose kind one of {MODEL_KINDS} "
                         f"(mlp takes no other key: its sizes are dataset.layers)")
    gen = torch.Generator().manual_seed(int(seed))
    return build_mlp(list(dataset_cfg["layers"]), dataset_cfg.get("hidden_activation", "relu"), gen,
                     init=init, seed=seed)
