import math
from types import SimpleNamespace

import pytest

from coordinator.aggregation import (
    Constant,
    FedAdam,
    FedAvgM,
    FedAvgRound,
    FedBuffBuffer,
    FedYogi,
    Hinge,
    NormBound,
    Polynomial,
    ServerSGD,
    configured,
)
from coordinator.config import AggregationConfig


def test_the_default_config_is_fedbuff_with_polynomial_staleness_and_plain_sgd():
    aggregation = configured(AggregationConfig())

    assert aggregation.fedbuff == FedBuffBuffer(
        buffer_size=10,
        max_staleness=20,
        staleness=Polynomial(exponent=0.5),
        server_optimizer=ServerSGD(learning_rate=1.0),
    )
    assert aggregation.norm_bound is None


@pytest.mark.parametrize(
    ("fields", "staleness"),
    [
        ({"staleness": "constant", "staleness_exponent": 2.0}, Constant()),
        ({"staleness": "polynomial", "staleness_exponent": 1.5}, Polynomial(exponent=1.5)),
        ({"staleness": "hinge", "hinge_a": 3.0, "hinge_b": 2}, Hinge(a=3.0, b=2)),
    ],
)
def test_the_staleness_function_takes_only_its_own_parameters(fields, staleness):
    assert configured(AggregationConfig(**fields)).fedbuff.staleness == staleness


@pytest.mark.parametrize(
    ("name", "optimizer"),
    [
        ("sgd", ServerSGD(learning_rate=0.5)),
        ("fedavgm", FedAvgM(learning_rate=0.5, momentum=0.8)),
        ("fedadam", FedAdam(learning_rate=0.5, beta1=0.7, beta2=0.95, tau=0.01)),
        ("fedyogi", FedYogi(learning_rate=0.5, beta1=0.7, beta2=0.95, tau=0.01)),
    ],
)
def test_the_server_optimizer_takes_only_its_own_parameters(name, optimizer):
    config = AggregationConfig(
        server_optimizer=name,
        server_learning_rate=0.5,
        server_momentum=0.8,
        beta1=0.7,
        beta2=0.95,
        tau=0.01,
    )

    aggregation = configured(config)

    assert aggregation.server_optimizer == optimizer
    assert aggregation.fedavg == FedAvgRound(server_optimizer=optimizer)
    assert aggregation.fedbuff.server_optimizer == optimizer


@pytest.mark.parametrize("policy", ["clip", "reject"])
def test_a_norm_bound_comes_with_its_policy(policy):
    config = AggregationConfig(max_update_norm=2.5, norm_policy=policy)

    assert configured(config).norm_bound == NormBound(max_norm=2.5, policy=policy)


def test_a_synchronous_job_never_builds_the_staleness_it_does_not_use():
    # The config accepts an infinite exponent; only FedBuff's staleness function refuses it.
    config = AggregationConfig(mode="sync", staleness_exponent=math.inf)

    aggregation = configured(config)

    assert aggregation.fedavg == FedAvgRound(server_optimizer=ServerSGD())


def test_any_object_with_the_config_fields_will_do():
    fields = AggregationConfig(buffer_size=3, staleness="constant").model_dump()

    aggregation = configured(SimpleNamespace(**fields))

    assert aggregation.fedbuff == FedBuffBuffer(
        buffer_size=3, max_staleness=20, staleness=Constant(), server_optimizer=ServerSGD()
    )
