"""An inference-only model rendered for any weights computes what the training plan computes."""

import numpy as np
import pytest

from device_sdk import PlanRunner
from fedge.errors import ManifestError
from fedge.manifest import PlanManifest


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp", "shakespeare_char", "synthetic_logreg"])
def test_a_rendered_inference_model_predicts_like_the_plan_with_the_same_weights(plans_dir, name):
    from ai_edge_litert.interpreter import Interpreter

    manifest = PlanManifest.from_json((plans_dir / f"{name}.json").read_text())
    template = (plans_dir / manifest.inference_file).read_bytes()
    runner = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    rng = np.random.default_rng(4)
    weights = rng.normal(0, 0.1, manifest.num_params).astype(np.float32)
    x = rng.random((5, *manifest.inputs["x"].shape[1:]), dtype=np.float32)
    if name == "shakespeare_char":  # character ids, carried as float32
        x = np.floor(x * manifest.num_classes).astype(np.float32)

    model = manifest.render_inference(template, weights)
    served = Interpreter(model_content=model).get_signature_runner(manifest.inference_signature)
    runner.set_weights(weights)

    np.testing.assert_allclose(served(x=x)["probabilities"], runner.infer(x), atol=1e-5)


def test_rendering_needs_the_template_the_manifest_names(plans_dir):
    manifest = PlanManifest.from_json((plans_dir / "mnist_mlp.json").read_text())

    with pytest.raises(ManifestError, match="does not match"):
        manifest.render_inference(b"another template", np.zeros(manifest.num_params, np.float32))


def test_rendering_needs_weights_of_the_right_length(plans_dir):
    manifest = PlanManifest.from_json((plans_dir / "mnist_mlp.json").read_text())
    template = (plans_dir / manifest.inference_file).read_bytes()

    with pytest.raises(ManifestError, match="expected 101770 weights"):
        manifest.render_inference(template, np.zeros(7, np.float32))
