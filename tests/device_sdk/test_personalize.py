"""Personalization after download: a local fine-tune kept only if better on a disjoint split."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_sdk import EvalResult, PlanError, PlanRunner, evaluate
from device_sdk.personalize import (
    FineTune,
    fine_tune,
    head_mask,
    keep_if_better,
    personalize,
    validation_split,
)
from fedge.wire import decode_vector


def load(plans_dir, name):
    runner = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    return runner, decode_vector((plans_dir / f"{name}.weights").read_bytes())


@pytest.fixture
def logreg(plans_dir):
    return load(plans_dir, "synthetic_logreg")


@pytest.fixture
def mlp(plans_dir):
    return load(plans_dir, "mnist_mlp")


def separable_data(rng, size=200):
    x = rng.normal(0, 1, (size, 60)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) * 3  # classes 0 and 3, decided by the first feature
    return x, y


# --- the split -------------------------------------------------------------------------------


@given(size=st.integers(0, 500), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_the_validation_split_never_overlaps_the_fine_tuning_split(size, fraction, seed):
    train, validation = validation_split(size, fraction, np.random.default_rng(seed))

    assert np.intersect1d(train, validation).size == 0
    if size >= 2:
        assert np.array_equal(np.sort(np.concatenate([train, validation])), np.arange(size))
        assert train.size >= 1 and validation.size >= 1
    else:
        assert train.size == validation.size == 0


def test_the_validation_split_holds_out_the_requested_share():
    train, validation = validation_split(100, 0.2, np.random.default_rng(0))

    assert (train.size, validation.size) == (80, 20)


# --- the rule (pure) -------------------------------------------------------------------------


def result(accuracy, loss):
    return EvalResult(loss=loss, accuracy=accuracy, num_examples=10)


def test_a_more_accurate_fine_tune_is_kept_even_at_a_higher_loss():
    assert keep_if_better(result(0.5, 1.0), result(0.6, 2.0))


def test_a_less_accurate_fine_tune_is_dropped_even_at_a_lower_loss():
    assert not keep_if_better(result(0.6, 2.0), result(0.5, 0.1))


def test_at_equal_accuracy_only_a_strictly_lower_loss_keeps_the_fine_tune():
    assert keep_if_better(result(0.5, 1.0), result(0.5, 0.9))
    assert not keep_if_better(result(0.5, 1.0), result(0.5, 1.0))


def test_a_diverged_fine_tune_is_never_kept():
    assert not keep_if_better(result(0.5, 1.0), None)
    assert not keep_if_better(result(0.0, 1.0), result(0.9, float("nan")))


# --- the fine-tune in the plan's signatures --------------------------------------------------


def test_a_head_fine_tune_leaves_every_weight_outside_the_last_layer_unchanged(mlp):
    runner, initial = mlp
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    head = head_mask(runner.manifest)

    tuned = fine_tune(
        runner, weights=initial, x=x, y=y, settings=FineTune(steps=5, scope="head"), rng=rng
    )

    assert tuned is not None
    assert head.sum() == 128 * 10 + 10  # dense2's kernel and bias
    np.testing.assert_array_equal(tuned[~head], initial[~head])
    assert not np.array_equal(tuned[head], initial[head])


def test_an_all_layers_fine_tune_moves_the_body_too(mlp):
    runner, initial = mlp
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)

    tuned = fine_tune(
        runner, weights=initial, x=x, y=y, settings=FineTune(steps=5, scope="all"), rng=rng
    )

    assert tuned is not None
    assert not np.array_equal(
        tuned[~head_mask(runner.manifest)], initial[~head_mask(runner.manifest)]
    )


# --- keep if better, end to end ---------------------------------------------------------------


def test_a_device_whose_fine_tune_helps_keeps_the_fine_tuned_weights(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))

    outcome = personalize(
        runner,
        global_weights=initial,
        x=x,
        y=y,
        settings=FineTune(steps=40, learning_rate=0.1, batch_size=16),
        rng=np.random.default_rng(1),
    )

    assert outcome.kept
    assert outcome.personalized_accuracy > outcome.baseline_accuracy
    assert outcome.tuned is not None
    np.testing.assert_array_equal(outcome.weights, outcome.tuned)


def test_a_device_whose_fine_tune_hurts_keeps_the_global_model(logreg):
    # Prepare: a global model that already fits the device's data well, then a fine-tune whose
    # step is so large that it overshoots far past the optimum.
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0))
    good = initial
    for seed in range(3):
        good = fine_tune(
            runner,
            weights=good,
            x=x,
            y=y,
            settings=FineTune(steps=40, learning_rate=0.1, scope="all"),
            rng=np.random.default_rng(seed),
        )
        assert good is not None
    runner.set_weights(good)
    assert evaluate(runner, x, y).accuracy > 0.9

    outcome = personalize(
        runner,
        global_weights=good,
        x=x,
        y=y,
        settings=FineTune(steps=3, learning_rate=100.0, batch_size=4),
        rng=np.random.default_rng(1),
    )

    assert outcome.tuned is not None  # finite weights, just worse ones
    assert outcome.personalized_accuracy < outcome.baseline_accuracy
    assert not outcome.kept
    np.testing.assert_array_equal(outcome.weights, good)


def test_a_device_with_one_example_cannot_validate_and_keeps_the_global_model(logreg):
    runner, initial = logreg
    x, y = separable_data(np.random.default_rng(0), size=1)

    outcome = personalize(
        runner,
        global_weights=initial,
        x=x,
        y=y,
        settings=FineTune(),
        rng=np.random.default_rng(1),
    )

    assert not outcome.kept
    assert outcome.personalized is None
    np.testing.assert_array_equal(outcome.weights, initial)


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", 0), ("batch_size", 0), ("learning_rate", 0.0), ("validation_fraction", 1.0)],
)
def test_settings_no_fine_tune_can_run_with_are_refused_by_name(field, value):
    with pytest.raises(PlanError, match=field):
        FineTune(**{field: value})
