"""Each lease's codec: the least lossy allowed one whose upload fits the job's per-task budget."""

from __future__ import annotations

import pytest

from coordinator.compression import choose_codec, relative_error, upload_budget
from fedge.wire import update_size

N = 100_000  # the MLP's size
ALLOWED = ["float32", "fp16", "rot8", "rot4", "rot2", "eden1", "randk10+rot4"]


def test_codecs_rank_from_exact_to_coarse_as_their_error_bounds_do():
    ranked = sorted(ALLOWED, key=relative_error)

    assert ranked == ["float32", "fp16", "rot8", "rot4", "rot2", "eden1", "randk10+rot4"]


def test_without_a_budget_the_least_lossy_allowed_codec_is_chosen():
    assert choose_codec(["rot4", "fp16", "eden1"], num_params=N) == "fp16"


def test_a_byte_budget_picks_the_least_lossy_codec_that_fits_it():
    budget = update_size("rot4", N)  # rot8 and better do not fit; rot4 fits exactly

    assert choose_codec(ALLOWED, num_params=N, task_bytes=budget) == "rot4"
    assert choose_codec(ALLOWED, num_params=N, task_bytes=budget - 1) == "rot2"


def test_a_time_budget_gives_a_slow_uplink_a_harder_codec_than_a_fast_one():
    fast = update_size("float32", N) / 5.0  # bytes/s: float32 takes 5 s
    slow = update_size("eden1", N) / 5.0  # rot2 would take 10 s
    choose = {"num_params": N, "task_seconds": 5.0}

    assert choose_codec(ALLOWED, uplink_bytes_per_second=fast, **choose) == "float32"
    assert choose_codec(ALLOWED, uplink_bytes_per_second=slow, **choose) == "eden1"


def test_a_device_that_measured_no_rate_gets_the_least_lossy_codec_under_a_time_budget():
    chosen = choose_codec(ALLOWED, num_params=N, task_seconds=1.0, uplink_bytes_per_second=None)

    assert chosen == "float32"


def test_when_nothing_fits_the_smallest_upload_is_chosen_rather_than_none():
    chosen = choose_codec(ALLOWED, num_params=N, task_bytes=10)

    assert chosen == "randk10+rot4"


def test_the_byte_and_time_budgets_together_allow_the_smaller_of_the_two():
    both = upload_budget(task_bytes=1_000, task_seconds=2.0, uplink_bytes_per_second=300.0)
    time_only = upload_budget(task_bytes=None, task_seconds=2.0, uplink_bytes_per_second=300.0)

    assert (both, time_only) == (600.0, 600.0)
    assert upload_budget(task_bytes=None, task_seconds=None, uplink_bytes_per_second=5.0) is None


def test_an_empty_allowed_list_is_refused():
    with pytest.raises(ValueError, match="at least one codec"):
        choose_codec([], num_params=N)
