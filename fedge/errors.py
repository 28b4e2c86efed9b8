"""Errors of the shared contract.

FedgeError
├── WireFormatError      bytes that are not a valid Fedge weight vector
│   └── NonFiniteValues  a float codec's values hold NaN or Inf
└── ManifestError        a plan manifest that is malformed or does not match its plan
"""


class FedgeError(Exception):
    """Root of every error Fedge raises on purpose."""


class WireFormatError(FedgeError, ValueError):
    """Bytes that do not decode to the weight vector they claim to be."""


class NonFiniteValues(WireFormatError):
    """An update whose float values (float32, fp16) hold NaN or Inf."""


class ManifestError(FedgeError, ValueError):
    """A plan manifest that is malformed, or that does not describe the plan beside it."""
