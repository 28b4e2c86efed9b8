"""The model zoo: named architectures that export to training plans."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedge.manifest import HyperParameters
from models.layers import LSTM, Conv3x3, Dense, Embedding, Flatten, Layer, MaxPool2x2


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: input shape (without batch), classes, default hyper-parameters, layers."""

    name: str
    version: str
    input_shape: tuple[int, ...]
    num_classes: int
    hparams: HyperParameters
    build: Callable[[np.random.Generator], list[Layer]]
    description: str
    # Inputs that are token ids in [0, vocabulary), carried as float32; None: real features.
    input_vocabulary: int | None = None


def _mnist_mlp(rng: np.random.Generator) -> list[Layer]:
    return [
        Flatten("flatten", 784),
        Dense("dense1", 784, 128, relu=True, rng=rng),
        Dense("dense2", 128, 10, relu=False, rng=rng),
    ]


def _mnist_cnn(rng: np.random.Generator) -> list[Layer]:
    return [
        Conv3x3("conv1", 1, 16, rng=rng),
        Conv3x3("conv2", 16, 32, rng=rng),
        MaxPool2x2("pool"),
        Flatten("flatten", 14 * 14 * 32),
        Dense("dense1", 14 * 14 * 32, 64, relu=True, rng=rng),
        Dense("dense2", 64, 10, relu=False, rng=rng),
    ]


def _synthetic_logreg(rng: np.random.Generator) -> list[Layer]:
    # Multinomial logistic regression on Synthetic(α, β): 60 features, 10 classes (FedProx §5.1).
    return [Dense("linear", 60, 10, relu=False, rng=rng)]


# LEAF's Shakespeare task (Caldas et al. 2018): 80 characters in, the next one out, over the 96
# ids of simulator.datasets (printable ASCII and one "other"). LEAF's model is an 8-dim embedding
# and two 256-unit LSTM layers; one 128-unit layer keeps a LiteRT step near 0.1 s
# (docs/experiments.md, "Shakespeare").
SHAKESPEARE_LENGTH, SHAKESPEARE_VOCABULARY = 80, 96


def _shakespeare_char(rng: np.random.Generator) -> list[Layer]:
    return [
        Embedding("embedding", SHAKESPEARE_VOCABULARY, 8, SHAKESPEARE_LENGTH, rng=rng),
        LSTM("lstm", 8, 128, SHAKESPEARE_LENGTH, rng=rng),
        Dense("output", 128, SHAKESPEARE_VOCABULARY, relu=False, rng=rng),
    ]


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mnist_mlp",
            version="1",
            input_shape=(28, 28, 1),
            num_classes=10,
            hparams=HyperParameters(learning_rate=0.05, momentum=0.9, batch_size=32),
            build=_mnist_mlp,
            description="MLP 784-128-10 with ReLU for 28×28 digits",
        ),
        ModelSpec(
            name="mnist_cnn",
            version="1",
            input_shape=(28, 28, 1),
            num_classes=10,
            hparams=HyperParameters(learning_rate=0.02, momentum=0.9, batch_size=32),
            build=_mnist_cnn,
            description="CNN conv3x3(16)-conv3x3(32)-maxpool2-dense(64)-dense(10), 28×28 digits",
        ),
        ModelSpec(
            name="synthetic_logreg",
            version="1",
            input_shape=(60,),
            num_classes=10,
            hparams=HyperParameters(learning_rate=0.01, momentum=0.0, batch_size=10),
            build=_synthetic_logreg,
            description="multinomial logistic regression for FedProx's Synthetic(α, β) task",
        ),
        ModelSpec(
            name="shakespeare_char",
            version="1",
            input_shape=(SHAKESPEARE_LENGTH,),
            num_classes=SHAKESPEARE_VOCABULARY,
            hparams=HyperParameters(learning_rate=0.8, momentum=0.0, batch_size=32),
            build=_shakespeare_char,
            description="next character after 80: embedding(8)-LSTM(128)-dense(96), LEAF's task",
            input_vocabulary=SHAKESPEARE_VOCABULARY,
        ),
    )
}


def get(name: str) -> ModelSpec:
    """The zoo entry called ``name``; an unknown name lists the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the zoo has: {', '.join(sorted(ZOO))}") from None
