"""The authors' classifiers (``apps/mlp_cnn/models.py`` at commit 97105b6 of
Abdoulaye-Koroko/natural-gradients), built from a dataset config's ``model: {kind: ...}``:

* ``mlp_bn`` -- their ``MLP`` (lines 59-128, the ``D_MNIST`` problem): Linear 784-1000-900-800-700-600-500-
  400-300-200-100-50-20-10, a ``BatchNorm1d`` after every hidden Linear and no activation function (their
  class has none: the network is linear between its BatchNorms);
* ``toynet`` -- their ``ToyNet`` (lines 30-54, ``MNIST_RESTRICTED``): Linear 784-10-30-20-15-10, tanh between;
* ``deep_linear`` -- their ``DeepLinear`` (lines 9-26, ``F_MNIST``): Linear(784, 10) + BatchNorm1d(10), then
  62 x [Linear(10, 10) + BatchNorm1d(10)], then Linear(10, 10); no activation (theirs is commented out);
* ``cuda_convnet`` -- their ``cuda_convnet`` (lines 351-374, the default of ``train_cnn.py``): Conv2d(3, 32, 3)
  -> ReLU -> MaxPool2d(3) -> BatchNorm2d(32) -> Conv2d(32, 32, 3) -> ReLU -> MaxPool2d(3) -> BatchNorm2d(32)
  -> Conv2d(32, 64, 2) -> ReLU -> Flatten -> Linear(64, 10); 3x32x32 -> 30 -> 10 -> 8 -> 2 -> 1x1x64.

Every network outputs logits (the categorical likelihood holds the softmax, as their ``nn.CrossEntropyLoss``).
The data loaders give flat vectors; an image network reshapes them to ``image_shape`` itself.

Initialisation (their ``apps/mlp_cnn/initializations.py`` lines 7-12, applied to every ``Linear`` and
``Conv2d`` by ``train_mlp.py`` lines 62-73 and ``train_cnn.py`` line 83): Xavier-uniform weights, biases
0.01; BatchNorm at torch's default (weight 1, bias 0). ``init="xavier_uniform"`` draws all layers from one
stream seeded with ``seed``; ``init="reseeded_per_layer"`` re-seeds before each layer, as their
``torch.manual_seed(seed)`` inside the initializer does (authors_code behaviour ``reseeded_init``).
Nothing touches the global random state.

BatchNorm parameters have no curvature block in our optimizers: they take the plain momentum step
(``opt.describe_layers()`` lists them). The authors' optimizers do the same: their KFAC registers only
``Linear``, ``Conv2d`` and ``ConvTranspose2d`` and "silently skip[s] other layers" (``optimizers/kfac.py``
lines 15 and 56-67, the same loop in every optimizer), so torch.optim.SGD moves BatchNorm's weight and bias
on their plain gradient -- unscaled by the KL clip, which multiplies only the preconditioned groups
(kfac.py lines 136-146).
"""
from __future__ import annotations

import torch
from torch import nn

CLASSIFIER_KINDS = ("mlp_bn", "toynet", "deep_linear", "cuda_convnet")
CLASSIFIER_INITS = ("xavier_uniform", "reseeded_per_layer")

MLP_BN_SIZES = (784, 1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 50, 20, 10)
TOYNET_SIZES = (784, 10, 30, 20, 15, 10)


class ImageClassifier(nn.Module):
    """Flat inputs in (reshaped to ``image_shape``), logits out."""

    def __init__(self, body: nn.Sequential, image_shape: tuple[int, int, int]):
        super().__init__()
        self.model = body
        self.image_shape = tuple(int(d) for d in image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.image_shape))


def _linear_stack(sizes, hidden: str) -> nn.Sequential:
    """Linear layers of ``sizes``; after each hidden one a BatchNorm1d (``hidden="batchnorm"``) or a tanh."""
    modules: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(nn.Linear(int(d_in), int(d_out)))
        if i < len(sizes) - 2:
            modules.append(nn.BatchNorm1d(int(d_out)) if hidden == "batchnorm" else nn.Tanh())
    return nn.Sequential(*modules)


def _cuda_convnet(image_shape, num_classes: int, channels=(32, 32, 64)) -> nn.Module:
    c_in, h, _ = (int(d) for d in image_shape)
    c1, c2, c3 = (int(c) for c in channels)
    side = ((((h - 2) // 3) - 2) // 3) - 1      # conv3, pool3, conv3, pool3, conv2
    if side < 1:
        raise ValueError(f"cuda_convnet: image_shape {tuple(image_shape)} is too small (needs at least 23x23)")
    body = nn.Sequential(
        nn.Conv2d(c_in, c1, 3), nn.ReLU(), nn.MaxPool2d(3), nn.BatchNorm2d(c1),
        nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(3), nn.BatchNorm2d(c2),
        nn.Conv2d(c2, c3, 2), nn.ReLU(), nn.Flatten(),
        nn.Linear(c3 * side * side, int(num_classes)))
    return ImageClassifier(body, image_shape)


def _initialise(model: nn.Module, seed: int, init: str) -> None:
    """Xavier-uniform weights and biases 0.01 on every Linear and Conv2d (module order)."""
    stream = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in model.modules():
            if type(module) in (nn.Linear, nn.Conv2d):
                if init == "reseeded_per_layer":
                    stream = torch.Generator().manual_seed(int(seed))
                nn.init.xavier_uniform_(module.weight, generator=stream)
                if module.bias is not None:
                    module.bias.fill_(0.01)


def build_classifier(kind: str, seed: int = 0, init: str = "xavier_uniform", num_classes: int = 10,
                     sizes=None, image_shape=(3, 32, 32), channels=(32, 32, 64), depth: int = 62) -> nn.Module:
    """One of the authors' classifiers (module docstring). ``sizes`` (mlp_bn, toynet), ``channels``
    (cuda_convnet) and ``depth`` (deep_linear: the number of 10x10 Linear+BatchNorm pairs) let tests build
    smaller ones of the same shape."""
    if init not in CLASSIFIER_INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {CLASSIFIER_INITS}")
    if kind == "mlp_bn":
        model = _linear_stack(tuple(sizes or MLP_BN_SIZES), "batchnorm")
    elif kind == "toynet":
        model = _linear_stack(tuple(sizes or TOYNET_SIZES), "tanh")
    elif kind == "deep_linear":
        model = _linear_stack((784,) + (10,) * (int(depth) + 1) + (int(num_classes),), "batchnorm")
    elif kind == "cuda_convnet":
        model = _cuda_convnet(image_shape, num_classes, channels)
    else:
        raise ValueError(f"unknown classifier kind {kind!r}; choose one of {CLASSIFIER_KINDS}")
    _initialise(model, seed, init)
    return model


__all__ = ["CLASSIFIER_INITS", "CLASSIFIER_KINDS", "ImageClassifier", "MLP_BN_SIZES", "TOYNET_SIZES",
           "build_classifier"]
