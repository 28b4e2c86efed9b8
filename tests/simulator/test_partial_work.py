"""A straggler's time budget in the simulator: charged in virtual time from the device's speed."""

import numpy as np
import pytest

from simulator.fleet import budgeted_examples


def test_a_device_fast_enough_for_every_epoch_has_no_budget_to_charge():
    assert (
        budgeted_examples(100, epochs=20, batch_size=10, ms_per_example=2.0, budget_seconds=4.0)
        is None
    )  # 2,000 examples · 2 ms = 4 s: it fits


def test_no_budget_means_every_epoch():
    assert (
        budgeted_examples(100, epochs=20, batch_size=10, ms_per_example=40.0, budget_seconds=None)
        is None
    )


def test_a_straggler_trains_the_whole_batches_that_start_within_its_budget():
    # 40 ms an example: 60 s is 1,500 examples = 15 epochs of 100; 61 s starts one more batch
    assert (
        budgeted_examples(100, epochs=20, batch_size=10, ms_per_example=40.0, budget_seconds=60.0)
        == 1500
    )
    assert (
        budgeted_examples(100, epochs=20, batch_size=10, ms_per_example=40.0, budget_seconds=60.1)
        == 1510
    )


def test_an_epochs_short_last_batch_counts_its_own_examples():
    # 95 examples: batches of 10, the tenth of 5; 1.2 epochs' time = 114 examples → 12 steps
    assert (
        budgeted_examples(95, epochs=5, batch_size=10, ms_per_example=10.0, budget_seconds=1.14)
        == 95 + 20
    )


def test_a_budget_too_short_for_one_batch_still_trains_one():
    assert (
        budgeted_examples(100, epochs=20, batch_size=10, ms_per_example=40.0, budget_seconds=0.001)
        == 10
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_charged_examples_never_exceed_the_full_task_nor_start_past_the_budget(seed):
    rng = np.random.default_rng(seed)
    examples, batch = int(rng.integers(5, 300)), int(rng.integers(1, 40))
    ms, budget = float(rng.uniform(1, 50)), float(rng.uniform(0.5, 30))

    trained = budgeted_examples(
        examples, epochs=20, batch_size=batch, ms_per_example=ms, budget_seconds=budget
    )

    if trained is not None:
        assert trained < examples * 20
        assert (trained - batch) * ms / 1000 < budget  # the last step started within it
