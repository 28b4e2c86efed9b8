import numpy as np
import pytest

from device_sdk import (
    PlanError,
    PlanRunner,
    TrainingError,
    evaluate,
    train_locally,
)
from fedge.manifest import HyperParameters
from fedge.wire import decode_vector


@pytest.fixture
def logreg(plans_dir) -> tuple[PlanRunner, np.ndarray]:
    runner = PlanRunner.from_files(plans_dir / "synthetic_logreg.tflite")
    initial = decode_vector((plans_dir / "synthetic_logreg.weights").read_bytes())
    return runner, initial


def separable_data(rng, size=103):
    x = rng.normal(0, 1, (size, 60)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) * 3  # classes 0 and 3, decided by the first feature
    return x, y


def test_training_returns_the_delta_from_the_base_and_the_example_count(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    config = HyperParameters(local_epochs=2, batch_size=10, learning_rate=0.1)

    result = train_locally(
        runner, base_weights=initial, x=x, y=y, hparams=config, rng=np.random.default_rng(1)
    )

    assert result.num_examples == 103
    assert result.metrics["steps"] == 2 * 11  # 10 full batches and one of 3, twice
    assert result.delta.dtype == np.float32
    assert result.delta.any()
    np.testing.assert_allclose(initial + result.delta, runner.get_weights(), atol=1e-6)


def test_training_lowers_the_loss_on_learnable_data(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    runner.set_weights(initial)
    before = evaluate(runner, x, y)

    result = train_locally(
        runner,
        base_weights=initial,
        x=x,
        y=y,
        hparams=HyperParameters(local_epochs=5, batch_size=10, learning_rate=0.1),
        rng=np.random.default_rng(1),
    )

    after = evaluate(runner, x, y)
    assert after.loss < before.loss / 2
    assert after.accuracy > 0.9
    assert result.metrics["train_loss"] < before.loss


def test_the_same_seed_gives_the_same_update(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    config = HyperParameters(local_epochs=1, batch_size=8, learning_rate=0.1, momentum=0.9)

    first = train_locally(
        runner, base_weights=initial, x=x, y=y, hparams=config, rng=np.random.default_rng(5)
    )
    second = train_locally(
        runner, base_weights=initial, x=x, y=y, hparams=config, rng=np.random.default_rng(5)
    )

    assert first.delta.tobytes() == second.delta.tobytes()


def test_fedprox_mu_pulls_the_update_towards_the_base(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))

    def update_norm(mu: float) -> float:
        config = HyperParameters(local_epochs=5, batch_size=10, learning_rate=0.1, mu=mu)
        result = train_locally(
            runner, base_weights=initial, x=x, y=y, hparams=config, rng=np.random.default_rng(1)
        )
        return float(np.linalg.norm(result.delta))

    assert update_norm(mu=1.0) < 0.8 * update_norm(mu=0.0)


def test_a_diverging_run_raises_instead_of_returning_an_update(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    x[0, 0] = 1e30
    config = HyperParameters(local_epochs=3, batch_size=10, learning_rate=1e10)

    with pytest.raises(TrainingError, match="diverged"):
        train_locally(
            runner, base_weights=initial, x=x, y=y, hparams=config, rng=np.random.default_rng(0)
        )


def test_training_on_no_examples_is_refused(logreg):
    runner, initial = logreg

    with pytest.raises(PlanError, match="zero examples"):
        train_locally(
            runner,
            base_weights=initial,
            x=np.zeros((0, 60), np.float32),
            y=np.zeros(0, np.int32),
            hparams=HyperParameters(learning_rate=0.01),
            rng=np.random.default_rng(0),
        )


def test_zero_epochs_is_refused(logreg):
    runner, initial = logreg

    with pytest.raises(PlanError, match="epochs"):
        train_locally(
            runner,
            base_weights=initial,
            x=np.zeros((4, 60), np.float32),
            y=np.zeros(4, np.int32),
            hparams=HyperParameters(learning_rate=0.01, local_epochs=0),
            rng=np.random.default_rng(0),
        )
