import hashlib

import pytest

tf = pytest.importorskip("tensorflow", reason="the exporter needs the 'models' extra")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from fedge.cli import main  # noqa: E402
from fedge.manifest import SIGNATURES, PlanManifest  # noqa: E402
from fedge.wire import decode_vector  # noqa: E402
from models.errors import FlexOpsError  # noqa: E402
from models.export import convert_builtins_only  # noqa: E402
from models.zoo import ZOO  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_exports_a_plan_its_manifest_describes(plans_dir, name):
    plan = (plans_dir / f"{name}.tflite").read_bytes()
    manifest = PlanManifest.from_json((plans_dir / f"{name}.json").read_text())
    initial = (plans_dir / manifest.initial_weights_file).read_bytes()

    assert manifest.name == name
    assert manifest.plan_sha256 == hashlib.sha256(plan).hexdigest()
    assert manifest.plan_bytes == len(plan)
    assert manifest.initial_weights_sha256 == hashlib.sha256(initial).hexdigest()
    assert decode_vector(initial, expected_length=manifest.num_params).shape == (
        manifest.num_params,
    )
    assert manifest.num_params == sum(p.size for p in manifest.weights_layout)
    assert manifest.inputs["x"].shape == (None, *ZOO[name].input_shape)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_plan_carries_all_signatures_with_their_inputs_and_outputs(plans_dir, name):
    interpreter = Interpreter(model_path=str(plans_dir / f"{name}.tflite"))

    found = interpreter.get_signature_list()

    for signature, (inputs, outputs) in SIGNATURES.items():
        assert sorted(found[signature]["inputs"]) == sorted(inputs)
        assert sorted(found[signature]["outputs"]) == sorted(outputs)


class UsesNativeConvGradient(tf.Module):
    """A module whose gradient needs the Flex ops Conv2DBackpropFilter and ReluGrad."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.ones([3, 3, 1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def train(self, x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "SAME")))
        self.kernel.assign_sub(0.1 * tape.gradient(loss, self.kernel))
        return {"loss": loss}


def test_exporting_a_module_with_flex_ops_fails_naming_every_op():
    module = UsesNativeConvGradient()

    with pytest.raises(FlexOpsError) as caught:
        convert_builtins_only(module, {"train": module.train.get_concrete_function()}, "bad")

    assert caught.value.ops == ["Conv2DBackpropFilter", "ReluGrad"]
    assert "Conv2DBackpropFilter, ReluGrad" in str(caught.value)


def test_cli_export_writes_plan_manifest_and_initial_weights(tmp_path, capsys):
    status = main(["models", "export", "synthetic_logreg", "--out", str(tmp_path)])

    assert status == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "synthetic_logreg.tflite",
        "synthetic_logreg.json",
        "synthetic_logreg.weights",
        "synthetic_logreg.infer.tflite",
    }
    assert "610 parameters" in capsys.readouterr().out


def test_cli_export_of_an_unknown_model_names_the_known_ones(tmp_path, capsys):
    status = main(["models", "export", "resnet", "--out", str(tmp_path)])

    assert status == 2
    assert ", ".join(sorted(ZOO)) in capsys.readouterr().err
