"""The authors' MNIST convolutional auto-encoder (``apps/cnn_autoencoder/models.py``,
``cnn_autoencoder_mnist``, at commit 97105b6 of Abdoulaye-Koroko/natural-gradients):

    Conv2d(1 -> 6, k 5) -> LeakyReLU(0.2) -> Conv2d(6 -> 16, k 5) -> LeakyReLU(0.2)
    -> ConvTranspose2d(16 -> 6, k 5) -> LeakyReLU(0.2) -> ConvTranspose2d(6 -> 1, k 5)

stride 1 and padding 0 throughout (28x28 -> 24x24 -> 20x20 -> 24x24 -> 28x28). Their last Sigmoid
(with ``nn.BCELoss``) is the Bernoulli likelihood here, as for the MLP auto-encoders: the network
outputs logits (``BCEWithLogits`` is the stable form). Their LeakyReLUs are ``inplace=True``; these are
not, because the statistics pass reads each layer's output as it left the layer (an in-place
activation would overwrite it; :func:`kfac_bench.curvature.stats.collect_statistics` refuses that).

The data loaders give flat 784-vectors: the model reshapes them to ``(N, 1, 28, 28)`` and flattens its
output back, so the data code and the likelihood are those of the MLP problems.

Initialisation: torch's default for each layer (their CNN script applies no initializer), drawn from
the run's ``seed`` without touching the global random state; ``init="reseeded_per_layer"`` re-seeds
before each layer, what the option means for the MLPs (their ``initializations.py``, which their CNN
script does not call).
"""
from __future__ import annotations

import torch
from torch import nn

# "xavier_uniform" (the name of the MLPs' default): torch's default initialisation, seeded
CONV_INITS = ("xavier_uniform", "reseeded_per_layer")


class ConvAutoencoder(nn.Module):
    """Flat inputs in, flat logits out; ``encoder`` and ``decoder`` as in the authors' class."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, image_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.image_shape = tuple(int(d) for d in image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.decoder(self.encoder(x.reshape(x.shape[0], *self.image_shape)))
        return z.reshape(x.shape[0], -1)


def build_conv_autoencoder(image_shape=(1, 28, 28), channels=(6, 16), kernel_size: int = 5,
                           negative_slope: float = 0.2, seed: int = 0, init: str = "xavier_uniform") -> ConvAutoencoder:
    """The authors' MNIST CNN auto-encoder (module docstring); ``channels`` and ``kernel_size`` let tests
    build a smaller one of the same shape."""
    if init not in CONV_INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {CONV_INITS}")
    c_in, (c1, c2), k = int(image_shape[0]), channels, int(kernel_size)
    makers = [lambda: nn.Conv2d(c_in, c1, k), lambda: nn.Conv2d(c1, c2, k),
              lambda: nn.ConvTranspose2d(c2, c1, k), lambda: nn.ConvTranspose2d(c1, c_in, k)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        layers = []
        for make in makers:
            if init == "reseeded_per_layer":
                torch.manual_seed(int(seed))
            layers.append(make())
    act = lambda: nn.LeakyReLU(negative_slope)   # noqa: E731
    encoder = nn.Sequential(layers[0], act(), layers[1], act())
    decoder = nn.Sequential(layers[2], act(), layers[3])
    return ConvAutoencoder(encoder, decoder, image_shape)


__all__ = ["CONV_INITS", "ConvAutoencoder", "build_conv_autoencoder"]
