"""Partitioners that spread a labelled dataset over simulated clients, seeded and reproducible.

Every partitioner returns one int64 index array per client and assigns each example to at most one
client (``iid``, ``dirichlet`` and ``shards`` to exactly one). Randomness comes only from the
``numpy.random.Generator`` passed in, so the same seed gives the same partition. Bad arguments raise
:class:`PartitionError` (a ``ValueError``) saying what is wrong; ``fedge simulate`` prints it as
its one-line error.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedge.errors import FedgeError

__all__ = [
    "PartitionError",
    "apportion",
    "by_sizes",
    "dirichlet",
    "iid",
    "power_law_sizes",
    "shards",
]

IndexArrays = list[npt.NDArray[np.int64]]


class PartitionError(FedgeError, ValueError):
    """A split that cannot be made: bad arguments, or a draw no attempt satisfied."""


def apportion(total: int, weights: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Split the integer ``total`` in proportion to ``weights``, summing exactly to ``total``.

    Uses the largest-remainder (Hamilton) method: every share is the floor of its exact quota, and
    the units left over go to the largest fractional parts, ties to the lower index.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise PartitionError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if total < 0:
        raise PartitionError(f"total must be >= 0, got {total}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise PartitionError("weights must be finite, non-negative and not all zero")
    quotas: npt.NDArray[np.float64] = total * (w / w.sum())
    shares: npt.NDArray[np.int64] = np.floor(quotas).astype(np.int64)
    # The floors sum to within len(weights) units below the total, so 0 <= left_over <= size.
    left_over = total - int(shares.sum())
    order = np.argsort(-(quotas - shares), kind="stable")
    shares[order[:left_over]] += 1
    return shares


def iid(num_examples: int, *, num_clients: int, rng: np.random.Generator) -> IndexArrays:
    """Shuffle ``num_examples`` indices and split them as evenly as possible over the clients.

    Client sizes differ by at most one; every example goes to exactly one client.
    """
    _check_clients(num_examples, num_clients=num_clients, min_size=1)
    permutation = rng.permutation(num_examples).astype(np.int64)
    return [part.copy() for part in np.array_split(permutation, num_clients)]


def by_sizes(
    num_examples: int,
    sizes: Sequence[int] | npt.NDArray[np.integer],
    *,
    rng: np.random.Generator,
) -> IndexArrays:
    """Give client ``k`` a uniformly random, disjoint draw of ``sizes[k]`` examples.

    This is the IID split with prescribed sizes, so ``power_law_sizes`` composes with it. When the
    sizes sum to less than ``num_examples`` the rest stay unassigned.
    """
    counts = np.asarray(sizes)
    if counts.ndim != 1 or counts.size == 0:
        raise PartitionError(f"sizes must be a non-empty 1-D sequence, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise PartitionError(f"sizes must be integers, got dtype {counts.dtype}")
    if np.any(counts < 0):
        raise PartitionError("sizes must be >= 0")
    if int(counts.sum()) > num_examples:
        raise PartitionError(
            f"sizes sum to {int(counts.sum())}, more than the {num_examples} examples"
        )
    permutation = rng.permutation(num_examples).astype(np.int64)
    cuts = np.cumsum(counts)[:-1]
    return [part.copy() for part in np.split(permutation[: int(counts.sum())], cuts)]


def dirichlet(
    labels: npt.ArrayLike,
    *,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    max_attempts: int = 1000,
) -> IndexArrays:
    """Label-skewed split: each class is spread over the clients in Dir(α) proportions.

    For every class a vector of client proportions is drawn from a symmetric Dirichlet(α) and the
    class's (shuffled) examples are cut accordingly. Small α gives each client few classes; large α
    approaches an IID split. This per-class form is the one of Yurochkin et al. 2019 and Wang et al.
    2020 (FedMA); Hsu et al. 2019, "Measuring the effects of non-identical data distribution",
    introduced Dirichlet label skew (drawing per client). The whole draw is repeated, at most
    ``max_attempts`` times, until every client holds at least ``min_size`` examples.
    """
    y = _check_labels(labels)
    _check_clients(y.size, num_clients=num_clients, min_size=min_size)
    if not (np.isfinite(alpha) and alpha > 0):
        raise PartitionError(f"alpha must be a positive number, got {alpha}")
    if max_attempts < 1:
        raise PartitionError(f"max_attempts must be >= 1, got {max_attempts}")

    by_class = [np.flatnonzero(y == c).astype(np.int64) for c in np.unique(y)]
    for _ in range(max_attempts):
        portions: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for members in by_class:
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            shuffled = rng.permutation(members)
            cuts = np.floor(np.cumsum(proportions)[:-1] * shuffled.size).astype(np.int64)
            for client, part in enumerate(np.split(shuffled, np.minimum(cuts, shuffled.size))):
                portions[client].append(part)
        clients = [np.concatenate(parts) for parts in portions]
        if min(part.size for part in clients) >= min_size:
            # Shuffle within a client so its local batches are not sorted by class.
            return [rng.permutation(part) for part in clients]
    raise PartitionError(
        f"no Dirichlet(alpha={alpha}) split of {y.size} examples gave all {num_clients} clients "
        f"at least {min_size} examples in {max_attempts} attempts; raise alpha, or lower "
        "num_clients or min_size"
    )


def shards(
    labels: npt.ArrayLike,
    *,
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator,
) -> IndexArrays:
    """Pathological non-IID split (McMahan et al. 2017): each client gets a few label-sorted shards.

    Examples are sorted by label (in random order within a label), cut into
    ``num_clients * shards_per_client`` contiguous shards of near-equal size, and each client gets
    ``shards_per_client`` shards at random. When every class has at least a shard's worth of
    examples, a shard spans at most two labels, so a client sees at most
    ``2 * shards_per_client`` labels.
    """
    y = _check_labels(labels)
    if shards_per_client < 1:
        raise PartitionError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_clients(y.size, num_clients=num_clients, min_size=1)
    num_shards = num_clients * shards_per_client
    if num_shards > y.size:
        raise PartitionError(
            f"{num_clients} clients × {shards_per_client} shards = {num_shards} shards, more than "
            f"the {y.size} examples"
        )
    shuffled = rng.permutation(y.size).astype(np.int64)
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    pieces = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.concatenate([pieces[s] for s in hand]) for hand in dealt]


def power_law_sizes(
    num_examples: int,
    *,
    num_clients: int,
    exponent: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> npt.NDArray[np.int64]:
    """Heavy-tailed client sizes that sum exactly to ``num_examples``, each at least ``min_size``.

    Each client draws a Pareto weight with tail index ``exponent`` (P(W > w) = w^-exponent, w >= 1;
    smaller means a heavier tail, a few clients holding most data); the examples beyond
    ``min_size`` per client are shared in proportion to the weights (largest-remainder rounding).
    """
    _check_clients(num_examples, num_clients=num_clients, min_size=min_size, allow_empty=True)
    if not (np.isfinite(exponent) and exponent > 0):
        raise PartitionError(f"exponent must be a positive number, got {exponent}")
    weights = rng.pareto(exponent, size=num_clients) + 1.0
    if not np.all(np.isfinite(weights)):
        # A tiny exponent can overflow a weight; the heaviest clients then share the excess.
        weights = np.where(np.isfinite(weights), 0.0, 1.0)
    return min_size + apportion(num_examples - num_clients * min_size, weights)


def _check_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Labels as a 1-D int64 array, or a ValueError."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise PartitionError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise PartitionError(f"labels must be integer class ids, got dtype {y.dtype}")
    return y.astype(np.int64)


def _check_clients(
    num_examples: int, *, num_clients: int, min_size: int, allow_empty: bool = False
) -> None:
    """Raise ValueError unless ``num_clients`` clients can each get ``min_size`` examples."""
    if num_examples < 0:
        raise PartitionError(f"num_examples must be >= 0, got {num_examples}")
    if num_clients < 1:
        raise PartitionError(f"num_clients must be >= 1, got {num_clients}")
    if min_size < 0:
        raise PartitionError(f"min_size must be >= 0, got {min_size}")
    if not allow_empty and num_clients > num_examples:
        raise PartitionError(f"more clients ({num_clients}) than examples ({num_examples})")
    if num_clients * min_size > num_examples:
        raise PartitionError(
            f"{num_clients} clients × min_size {min_size} needs {num_clients * min_size} "
            f"examples, only {num_examples} given"
        )
