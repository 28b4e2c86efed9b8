"""The device SDK runs where TensorFlow is absent: blocked from import, or not installed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_sdk import PlanRunner

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("run_plan_steps.py")


def run_steps(python: str, plan: Path, tmp_path: Path, *extra: str, steps: int = 3) -> dict:
    rng = np.random.default_rng(11)
    runner = PlanRunner.from_files(plan)
    inputs, output = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(
        inputs,
        weights=runner.get_weights(),
        x=rng.random((steps, 32, 28, 28, 1), dtype=np.float32),
        y=rng.integers(0, 10, (steps, 32)).astype(np.int32),
        hparams=np.array([0.05, 0.9, 0.0]),
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [python, str(SCRIPT), str(plan), str(inputs), str(output), *extra],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    with np.load(output) as result:
        return {key: result[key] for key in result.files}


def steps_in_this_process(plan: Path, tmp_path: Path) -> dict:
    with np.load(tmp_path / "in.npz") as data:
        runner = PlanRunner.from_files(plan)
        runner.set_weights(data["weights"])
        runner.set_anchor(data["weights"])
        runner.set_hparams(learning_rate=0.05, momentum=0.9, mu=0.0)
        losses = [runner.train_step(x, y) for x, y in zip(data["x"], data["y"], strict=True)]
    return {"losses": np.array(losses), "weights": runner.get_weights()}


def test_importing_device_sdk_does_not_import_tensorflow():
    code = "import sys, device_sdk; print('tensorflow' in sys.modules)"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp"])
def test_device_sdk_trains_a_plan_where_importing_tensorflow_fails(plans_dir, tmp_path, name):
    result = run_steps(sys.executable, plans_dir / f"{name}.tflite", tmp_path, "--block-tensorflow")

    assert "tensorflow" not in set(result["modules"])
    assert str(result["runtime"]) == "ai_edge_litert"
    expected = steps_in_this_process(plans_dir / f"{name}.tflite", tmp_path)
    assert result["losses"].tolist() == expected["losses"].tolist()
    assert result["weights"].tobytes() == expected["weights"].tobytes()


def tflite_runtime_python() -> str:
    python = os.environ.get("FEDGE_TFLITE_PYTHON", "")
    if not Path(python).is_file():
        if os.environ.get("CI"):
            pytest.fail("FEDGE_TFLITE_PYTHON must point at the tflite-runtime venv on CI")
        pytest.skip("no tflite-runtime venv: run through `make test` to build .venv-tflite")
    return os.path.abspath(python)  # not resolve(): that follows the venv symlink out


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp"])
def test_tflite_runtime_with_no_tensorflow_installed_trains_like_litert(plans_dir, tmp_path, name):
    # One step: over several, a ReLU or pool tie decided by a 1e-7 rounding difference between
    # the two runtimes' kernels legitimately sends later steps apart.
    result = run_steps(tflite_runtime_python(), plans_dir / f"{name}.tflite", tmp_path, steps=1)

    assert str(result["runtime"]) == "tflite_runtime"
    assert "tensorflow" not in set(result["modules"])
    expected = steps_in_this_process(plans_dir / f"{name}.tflite", tmp_path)
    np.testing.assert_allclose(result["losses"], expected["losses"], rtol=1e-5)
    np.testing.assert_allclose(result["weights"], expected["weights"], rtol=1e-5, atol=1e-5)
