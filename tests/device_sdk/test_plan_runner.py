import numpy as np
import pytest

from device_sdk import PlanError, PlanRunner
from fedge.manifest import PlanManifest


@pytest.fixture
def mlp(plans_dir) -> PlanRunner:
    return PlanRunner.from_files(plans_dir / "mnist_mlp.tflite")


def digits_batch(rng, size=16):
    return rng.random((size, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, size)


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_cnn", "synthetic_logreg"])
def test_weights_round_trip_bit_exactly_between_two_interpreters(plans_dir, name):
    rng = np.random.default_rng(0)
    first = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    second = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    weights = rng.normal(0, 0.1, first.num_params).astype(np.float32)

    first.set_weights(weights)
    second.set_weights(first.get_weights())

    assert second.get_weights().tobytes() == weights.tobytes()
    spec = first.manifest.inputs["x"].shape[1:]
    x = rng.random((8, *spec), dtype=np.float32)
    y = rng.integers(0, first.manifest.num_classes, 8)
    assert first.infer(x).tobytes() == second.infer(x).tobytes()
    assert first.train_step(x, y) == second.train_step(x, y)


def test_a_plan_that_does_not_match_its_manifest_is_refused(plans_dir):
    manifest = PlanManifest.from_json((plans_dir / "mnist_mlp.json").read_text())
    other_plan = (plans_dir / "synthetic_logreg.tflite").read_bytes()

    with pytest.raises(PlanError, match="sha256"):
        PlanRunner(other_plan, manifest)


def test_a_missing_manifest_is_a_plan_error(tmp_path, plans_dir):
    lonely = tmp_path / "mnist_mlp.tflite"
    lonely.write_bytes((plans_dir / "mnist_mlp.tflite").read_bytes())

    with pytest.raises(PlanError, match="cannot read plan files"):
        PlanRunner.from_files(lonely)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.zeros(5, np.float32), "shape"),
        (np.zeros(101770, np.float64), "float32"),
        (np.full(101770, np.nan, np.float32), "NaN or Inf"),
        (np.full(101770, np.inf, np.float32), "NaN or Inf"),
    ],
)
def test_bad_weights_are_refused_and_leave_the_model_unchanged(mlp, weights, message):
    before = mlp.get_weights()

    with pytest.raises(PlanError, match=message):
        mlp.set_weights(weights)

    assert mlp.get_weights().tobytes() == before.tobytes()


def test_a_batch_of_the_wrong_shape_is_refused(mlp):
    with pytest.raises(PlanError, match=r"x must have shape \(batch>0, 28, 28, 1\)"):
        mlp.train_step(np.zeros((4, 784), np.float32), np.zeros(4, np.int64))


def test_labels_outside_the_classes_are_refused(mlp):
    rng = np.random.default_rng(1)
    x, _ = digits_batch(rng, 4)

    with pytest.raises(PlanError, match=r"labels must lie in \[0, 10\)"):
        mlp.train_step(x, np.array([0, 1, 2, 10]))


def test_float_labels_are_refused(mlp):
    rng = np.random.default_rng(1)
    x, _ = digits_batch(rng, 4)

    with pytest.raises(PlanError, match="integer class ids"):
        mlp.train_step(x, np.zeros(4, np.float32))


def test_an_empty_batch_is_refused(mlp):
    with pytest.raises(PlanError, match="batch>0"):
        mlp.infer(np.zeros((0, 28, 28, 1), np.float32))


def test_negative_learning_rate_is_refused(mlp):
    with pytest.raises(PlanError, match="learning_rate"):
        mlp.set_hparams(learning_rate=-0.1, momentum=0.0, mu=0.0)


def test_infer_returns_probabilities(mlp):
    rng = np.random.default_rng(2)
    x, _ = digits_batch(rng, 5)

    probabilities = mlp.infer(x)

    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
