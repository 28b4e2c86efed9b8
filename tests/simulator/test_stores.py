"""``fedge fill-stores``: one example store per real agent, split from an offline dataset."""

from __future__ import annotations

import numpy as np
import pytest

from device_sdk.example_store import ExampleStore
from fedge.cli import main
from simulator.datasets import load
from simulator.stores import StoreFillError, fill_stores


def _read(path):
    with ExampleStore(path, now=lambda: 0.0) as store:
        return store.load()


def test_each_device_gets_its_own_store_and_state_folder(tmp_path):
    filled = fill_stores(tmp_path, devices=3, dataset="digits", examples_per_device=50)

    assert [store.data for store in filled] == [
        tmp_path / f"device-{n}" / "examples.db" for n in (1, 2, 3)
    ]
    assert all(store.state.is_dir() for store in filled)
    assert [len(_read(store.data)[1]) for store in filled] == [50, 50, 50]


def test_every_example_goes_to_exactly_one_store(tmp_path):
    filled = fill_stores(tmp_path, devices=4, dataset="digits")

    stored = np.concatenate([_read(store.data)[0].reshape(store.examples, -1) for store in filled])
    everything = load("digits").x.reshape(len(load("digits")), -1)

    assert len(stored) == len(everything) == 1797
    np.testing.assert_array_equal(np.unique(stored, axis=0), np.unique(everything, axis=0))


def _top_label_share(labels) -> float:
    return float(np.bincount(labels).max() / len(labels))


def test_a_small_alpha_skews_each_devices_labels(tmp_path):
    skewed = fill_stores(tmp_path / "skewed", devices=5, dataset="digits", alpha=0.05, seed=1)
    iid = fill_stores(tmp_path / "iid", devices=5, dataset="digits", seed=1)

    def share(filled) -> float:
        return float(np.mean([_top_label_share(_read(store.data)[1]) for store in filled]))

    assert share(iid) < 0.2  # ten classes, evenly: about 0.1 each
    assert share(skewed) > 0.3


def test_filling_again_replaces_the_stores(tmp_path):
    fill_stores(tmp_path, devices=2, dataset="digits", examples_per_device=30)
    filled = fill_stores(tmp_path, devices=2, dataset="digits", examples_per_device=10)

    assert [len(_read(store.data)[1]) for store in filled] == [10, 10]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 0}, "--devices must be at least 1"),
        ({"devices": 2, "examples_per_device": 0}, "--examples must be at least 1"),
        ({"devices": 2, "alpha": 0.0}, "--alpha must be above 0"),
        ({"devices": 5000}, "too few for 5000 devices"),
    ],
)
def test_arguments_no_split_can_satisfy_are_refused(tmp_path, kwargs, message):
    with pytest.raises(StoreFillError, match=message):
        fill_stores(tmp_path, dataset="digits", **kwargs)


def test_the_command_says_where_each_store_is_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert (
        main(["fill-stores", "--out", str(tmp_path), "--devices", "2", "--dataset", "digits"]) == 0
    )
    assert "--state-dir" in capsys.readouterr().out

    assert main(["fill-stores", "--out", str(tmp_path), "--devices", "0"]) == 2
    assert capsys.readouterr().err.strip() == "fedge: error: --devices must be at least 1, not 0"
