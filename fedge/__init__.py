"""Fedge: the contract shared by every part (wire format, plan manifest) and the ``fedge`` CLI."""

__version__ = "0.1.0"
