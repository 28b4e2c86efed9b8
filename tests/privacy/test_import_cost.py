"""A coordinator that runs no DP job never imports dp-accounting (scipy: seconds per start)."""

from __future__ import annotations

import subprocess
import sys


def test_starting_the_coordinator_leaves_dp_accounting_unimported():
    check = (
        "import sys, coordinator.api.app, coordinator.cli; "
        "loaded = [m for m in ('dp_accounting', 'scipy') if m in sys.modules]; "
        "assert not loaded, loaded"
    )

    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)

    assert run.returncode == 0, run.stderr


def test_the_accountant_is_still_there_when_asked_for():
    from coordinator.privacy import PrivacyAccountant, PrivacyLedger

    assert PrivacyAccountant.__module__ == "coordinator.privacy.accountant"
    assert PrivacyLedger().versions == 0
