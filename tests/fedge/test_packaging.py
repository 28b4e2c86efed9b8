"""The distribution's metadata: Apache-2.0 LICENSE by SPDX, typed packages, classifiers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ("fedge", "device_sdk", "coordinator", "simulator", "models")


def test_the_license_is_the_apache_2_0_text_declared_as_an_spdx_expression():
    text = (ROOT / "LICENSE").read_text()

    assert PROJECT["project"]["license"] == "Apache-2.0"
    assert PROJECT["project"]["license-files"] == ["LICENSE"]
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_no_license_classifier_beside_the_expression():
    classifiers = PROJECT["project"]["classifiers"]

    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639 forbids both
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_ships_a_py_typed_marker(package):
    assert (ROOT / package / "py.typed").is_file()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["*"]


def test_no_placeholder_urls():
    assert "urls" not in PROJECT["project"]  # none known yet: docs/packaging.md
