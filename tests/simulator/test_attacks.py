"""Malicious simulated devices: who they are, and what they do to the update they produce."""

import numpy as np
import pytest
from pydantic import ValidationError

from device_sdk.session import Failure
from device_sdk.trainer import TrainResult
from simulator.attacks import Adversary, backdoor_examples, stamp
from simulator.config import AttackConfig, SimulationConfig

HONEST_DELTA = np.array([0.5, -1.0, 2.0], np.float32)


def trained(x, y):
    """A stand-in for the device SDK's training: its delta, and what it was trained on."""
    return TrainResult(delta=HONEST_DELTA.copy(), num_examples=len(y), metrics={"y": y.tolist()})


def images(n=8, side=6):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 0.5, (n, side, side, 1)).astype(np.float32), np.arange(n, dtype=np.int32)


def adversary(**attack):
    return Adversary.draw(AttackConfig(**attack), devices=100, seed=3)


def test_the_malicious_share_of_the_devices_is_drawn_from_the_seed():
    first, again = adversary(kind="scale", fraction=0.1), adversary(kind="scale", fraction=0.1)
    other_seed = Adversary.draw(AttackConfig(kind="scale", fraction=0.1), devices=100, seed=4)

    assert len(first.malicious) == 10
    assert first.malicious == again.malicious != other_seed.malicious
    assert all(0 <= device < 100 for device in first.malicious)


def test_a_tiny_share_still_makes_one_malicious_device_and_none_makes_no_adversary():
    assert (
        len(
            Adversary.draw(AttackConfig(kind="scale", fraction=0.001), devices=50, seed=0).malicious
        )
        == 1
    )
    assert Adversary.draw(AttackConfig(), devices=50, seed=0) is None
    assert Adversary.draw(AttackConfig(kind="sign_flip"), devices=50, seed=0) is None


@pytest.mark.parametrize("kind, factor", [("scale", 10.0), ("sign_flip", -1.0)])
def test_a_malicious_device_sends_its_trained_delta_scaled_or_flipped(kind, factor):
    attacker = adversary(kind=kind, fraction=0.1)
    bad = min(attacker.malicious)
    x, y = images()

    result = attacker.train(bad, (x, y), trained, rng=np.random.default_rng(0))

    np.testing.assert_allclose(result.delta, factor * HONEST_DELTA)
    assert result.delta.dtype == np.float32


def test_an_honest_device_trains_and_sends_untouched():
    attacker = adversary(kind="backdoor", fraction=0.1)
    honest = next(d for d in range(100) if not attacker.is_malicious(d))
    x, y = images()

    result = attacker.train(honest, (x, y), trained, rng=np.random.default_rng(0))

    np.testing.assert_array_equal(result.delta, HONEST_DELTA)
    assert result.metrics["y"] == y.tolist()


def test_a_backdoor_device_trains_on_a_share_of_its_examples_stamped_and_relabelled():
    attacker = adversary(kind="backdoor", fraction=0.1, target_class=7, poisoned_share=0.5)
    x, y = images(n=8)
    seen = {}

    def remember(x_used, y_used):
        seen["x"], seen["y"] = x_used, y_used
        return trained(x_used, y_used)

    attacker.train(min(attacker.malicious), (x, y), remember, rng=np.random.default_rng(0))

    stamped = np.all(seen["x"][:, -4:, -4:, 0] == 1.0, axis=(1, 2))
    assert np.sum(stamped) == 4  # half of 8
    assert np.all(seen["y"][stamped] == 7)
    np.testing.assert_array_equal(seen["y"][~stamped], y[~stamped])
    np.testing.assert_array_equal(x, images(n=8)[0])  # the device's own data is not edited


def test_a_boosted_backdoor_scales_its_delta():
    attacker = adversary(kind="backdoor", fraction=0.1, boost=5.0)

    result = attacker.train(
        min(attacker.malicious), images(), trained, rng=np.random.default_rng(0)
    )

    np.testing.assert_allclose(result.delta, 5.0 * HONEST_DELTA)


def test_a_training_failure_is_passed_on_untouched():
    attacker = adversary(kind="scale", fraction=0.1)
    failure = Failure(0, "diverged", "loss is NaN")

    result = attacker.train(min(attacker.malicious), images(), lambda x, y: failure, rng=None)

    assert result is failure


def test_the_trigger_is_a_corner_square_of_an_image_or_the_last_features_of_a_vector():
    config = AttackConfig(kind="backdoor", patch=2, trigger_value=3.0)
    x_images, _ = images(n=2, side=5)
    vectors = np.zeros((2, 6), np.float32)

    stamped = stamp(x_images, config)
    stamped_vectors = stamp(vectors, config)

    assert np.all(stamped[:, -2:, -2:, :] == 3.0)
    np.testing.assert_array_equal(stamped[:, :3, :, :], x_images[:, :3, :, :])
    np.testing.assert_array_equal(stamped_vectors, [[0, 0, 0, 0, 3, 3]] * 2)


def test_the_backdoor_probe_holds_the_other_classes_stamped_and_labelled_the_target():
    config = AttackConfig(kind="backdoor", target_class=2)
    x, y = images(n=6)

    probe_x, probe_y = backdoor_examples(x, y, config)

    assert len(probe_y) == 5 and set(probe_y) == {2}
    assert np.all(probe_x[:, -4:, -4:, :] == 1.0)


def test_a_malicious_share_without_an_attack_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match=r"attack\.kind"):
        SimulationConfig.model_validate({"attack": {"fraction": 0.1}})


def test_an_attack_is_read_from_the_config_and_its_overrides():
    config = SimulationConfig.model_validate(
        {"attack": {"kind": "sign_flip", "fraction": 0.05}, "devices": 40}
    )

    assert (config.attack.kind, config.attack.fraction) == ("sign_flip", 0.05)
