import numpy as np
import pytest

from device_sdk import (
    PlanError,
    PlanRunner,
    TrainingError,
    evaluate,
    train_locally,
)
from device_sdk.trainer import ExampleBudget, TimeBudget
from fedge.clock import ManualClock
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


def test_a_spent_budget_stops_training_early_and_the_metrics_say_how_much_was_done(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))  # 103 examples: 11 steps an epoch
    config = HyperParameters(local_epochs=5, batch_size=10, learning_rate=0.1)

    result = train_locally(
        runner,
        base_weights=initial,
        x=x,
        y=y,
        hparams=config,
        rng=np.random.default_rng(1),
        budget=ExampleBudget(130),  # one epoch (103) and three batches (30)
    )

    assert result.metrics["steps"] == 11 + 3
    assert result.metrics["examples_trained"] == 133
    assert result.metrics["epochs"] == pytest.approx(133 / 103)
    assert result.metrics["partial"] == 1.0
    assert result.num_examples == 103  # the example count is the device's data, as FedProx has it
    np.testing.assert_allclose(initial + result.delta, runner.get_weights(), atol=1e-6)


def test_a_partial_update_is_the_same_steps_as_the_start_of_the_full_training(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    one_epoch = HyperParameters(local_epochs=1, batch_size=10, learning_rate=0.1)
    three = HyperParameters(local_epochs=3, batch_size=10, learning_rate=0.1)

    full = train_locally(
        runner, base_weights=initial, x=x, y=y, hparams=one_epoch, rng=np.random.default_rng(4)
    )
    partial = train_locally(
        runner,
        base_weights=initial,
        x=x,
        y=y,
        hparams=three,
        rng=np.random.default_rng(4),
        budget=ExampleBudget(103),
    )

    np.testing.assert_array_equal(partial.delta, full.delta)
    assert partial.metrics["steps"] == full.metrics["steps"] == 11


def test_a_budget_spent_before_training_still_trains_one_step(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))

    result = train_locally(
        runner,
        base_weights=initial,
        x=x,
        y=y,
        hparams=HyperParameters(local_epochs=2, batch_size=10, learning_rate=0.1),
        rng=np.random.default_rng(1),
        budget=ExampleBudget(0),
    )

    assert result.metrics["steps"] == 1 and result.delta.any()


def test_a_budget_that_covers_every_epoch_changes_nothing(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    config = HyperParameters(local_epochs=2, batch_size=10, learning_rate=0.1)

    result = train_locally(
        runner,
        base_weights=initial,
        x=x,
        y=y,
        hparams=config,
        rng=np.random.default_rng(1),
        budget=ExampleBudget(10_000),
    )

    assert (result.metrics["steps"], result.metrics["partial"]) == (22, 0.0)


def test_a_time_budget_stops_when_its_clock_says_the_seconds_are_spent(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    clock = ManualClock(100.0)
    budget = TimeBudget.starting_now(5.0, clock=clock.now)
    ticking = TickingRunner(runner, clock, seconds_per_step=1.0)

    result = train_locally(
        ticking,
        base_weights=initial,
        x=x,
        y=y,
        hparams=HyperParameters(local_epochs=3, batch_size=10, learning_rate=0.1),
        rng=np.random.default_rng(1),
        budget=budget,
    )

    assert result.metrics["steps"] == 5  # steps start at 100, 101, …, 104; at 105 it is spent


class TickingRunner:
    """A plan runner whose every training step takes ``seconds_per_step`` on a manual clock."""

    def __init__(self, runner: PlanRunner, clock: ManualClock, *, seconds_per_step: float):
        self._runner, self._clock, self._seconds = runner, clock, seconds_per_step

    def train_step(self, x, y):
        loss = self._runner.train_step(x, y)
        self._clock.advance(self._seconds)
        return loss

    def __getattr__(self, name):
        return getattr(self._runner, name)
