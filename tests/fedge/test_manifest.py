import dataclasses
import hashlib
import json

import pytest

from fedge.errors import ManifestError
from fedge.manifest import HyperParameters, PlanManifest, TensorSpec, WeightSlice


def make_manifest(**changes) -> PlanManifest:
    plan = b"plan bytes"
    manifest = PlanManifest(
        name="tiny",
        version="1",
        plan_file="tiny.tflite",
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        plan_bytes=len(plan),
        inputs={"x": TensorSpec((None, 3), "float32"), "y": TensorSpec((None,), "int32")},
        num_classes=2,
        num_params=8,
        weights_layout=(
            WeightSlice("dense/kernel", (3, 2), 0, 6),
            WeightSlice("dense/bias", (2,), 6, 2),
        ),
        optimizer="sgd_momentum",
        hparams=HyperParameters(learning_rate=0.1, momentum=0.9),
        initial_weights_file="tiny.weights",
        initial_weights_sha256="0" * 64,
        created_by="test",
    )
    return dataclasses.replace(manifest, **changes)


def test_manifest_round_trips_through_json():
    manifest = make_manifest()

    assert PlanManifest.from_json(manifest.to_json()) == manifest


def test_verify_plan_accepts_the_plan_it_describes():
    make_manifest().verify_plan(b"plan bytes")


def test_verify_plan_refuses_another_plan():
    with pytest.raises(ManifestError, match="does not match"):
        make_manifest().verify_plan(b"another plan")


def test_a_layout_that_does_not_tile_the_vector_is_refused():
    raw = json.loads(make_manifest().to_json())
    raw["weights_layout"][1]["offset"] = 7

    with pytest.raises(ManifestError, match="dense/bias"):
        PlanManifest.from_dict(raw)


def test_a_layout_shorter_than_num_params_is_refused():
    raw = json.loads(make_manifest().to_json())
    raw["num_params"] = 9

    with pytest.raises(ManifestError, match="covers 8 weights"):
        PlanManifest.from_dict(raw)


def test_a_missing_field_is_named():
    raw = json.loads(make_manifest().to_json())
    del raw["num_classes"]

    with pytest.raises(ManifestError, match="num_classes"):
        PlanManifest.from_dict(raw)


def test_malformed_json_is_a_manifest_error():
    with pytest.raises(ManifestError, match="not valid JSON"):
        PlanManifest.from_json("{nope")


def test_an_unknown_format_is_refused():
    raw = json.loads(make_manifest().to_json())
    raw["format"] = "fedge.plan/99"

    with pytest.raises(ManifestError, match="unsupported manifest format"):
        PlanManifest.from_dict(raw)
