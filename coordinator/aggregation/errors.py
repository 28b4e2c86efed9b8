"""Errors raised while aggregating updates.

FedgeError (fedge.errors)
└── AggregationError (also a ValueError)   an update or a state that cannot be aggregated
    ├── StaleUpdateError                   an update based on a version older than allowed
    ├── NormTooLargeError                  an update longer than its job's norm bound allows
    └── NonFiniteError                     a sum, model or optimizer state that overflowed

Bad *configuration* (a negative learning rate, an unknown optimizer name) raises a plain
``ValueError`` when the object is built: that is a deployment mistake, not a device's.
"""

from fedge.errors import FedgeError


class AggregationError(FedgeError, ValueError):
    """An update or an aggregation state that cannot be used; the message says what is wrong."""


class StaleUpdateError(AggregationError):
    """An update trained on a global version more than ``max_staleness`` versions old."""

    def __init__(self, staleness: int, max_staleness: int) -> None:
        super().__init__(
            f"update is {staleness} versions stale; at most {max_staleness} are accepted"
        )
        self.staleness = staleness
        self.max_staleness = max_staleness


class NormTooLargeError(AggregationError):
    """An update whose L2 norm exceeds ``max_norm`` under the ``reject`` policy."""

    def __init__(self, norm: float, max_norm: float) -> None:
        super().__init__(f"update norm {norm:.4g} exceeds the bound {max_norm:.4g}")
        self.norm = norm
        self.max_norm = max_norm


class NonFiniteError(AggregationError):
    """Finite inputs whose sum, mean or server step overflowed to Inf (or NaN): nothing is kept."""
