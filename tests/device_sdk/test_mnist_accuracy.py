"""Centralised training through the device runtime reaches the accuracy the issue asks for."""

import json

import pytest

from fedge.cli import main

pytestmark = pytest.mark.slow


def test_mnist_cnn_trained_on_device_reaches_088_test_accuracy_in_six_epochs(
    plans_dir, tmp_path, capsys
):
    history_file = tmp_path / "history.json"

    status = main(
        [
            "train",
            "--plan",
            str(plans_dir / "mnist_cnn.tflite"),
            "--dataset",
            "mnist",
            "--epochs",
            "6",
            "--test-size",
            "1000",
            "--json",
            str(history_file),
        ]
    )

    assert status == 0
    history = json.loads(history_file.read_text())["history"]
    assert len(history) == 6
    assert history[-1]["test_accuracy"] >= 0.88
    assert "4000 train / 1000 test" in capsys.readouterr().out


def test_train_with_an_unknown_dataset_says_which_exist(plans_dir, capsys):
    status = main(["train", "--plan", str(plans_dir / "mnist_mlp.tflite"), "--dataset", "cifar"])

    assert status == 2
    assert "mnist" in capsys.readouterr().err
