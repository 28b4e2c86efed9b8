"""Compressed uploads: the lease names a codec and seed, the upload must match, bytes are counted.

An upload is decoded against its lease (codec, seed, the model's length) and refused, with its
reason, when it does not match; nothing of a refused upload reaches the model.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import event, select

from coordinator.config import JobCreate
from coordinator.db.models import Update, Version
from coordinator.errors import InvalidUpdate
from fedge.protocol import Reason, Task
from fedge.wire import decode_update, encode_update, encode_vector, update_size
from tests.coordinator.services.world import INITIAL_WEIGHTS, NUM_PARAMS, World, eligible

ROT4 = {"codecs": ["rot4"]}


def encoded(task: Task, values, *, codec: str | None = None, seed: int | None = None) -> bytes:
    """A delta encoded as a device would for ``task`` (or with another codec or seed)."""
    vector = np.asarray(values, np.float32)
    return encode_update(
        vector,
        codec or task.codec,
        seed=task.codec_seed if seed is None else seed,
        rng=np.random.default_rng(1),
    )


def rechecksummed(body: bytes, offset: int, patch: bytes) -> bytes:
    """``body`` with ``patch`` written at ``offset`` and its CRC-32 made right again."""
    data = bytearray(body)
    data[offset : offset + len(patch)] = patch
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_a_job_allows_float32_only_unless_it_says_otherwise():
    config = JobCreate(name="j", plan_id=1)

    assert config.compression.codecs == ["float32"]


def test_allowed_codecs_are_stored_canonical_and_an_unknown_one_is_refused_by_name():
    config = JobCreate(name="j", plan_id=1, compression={"codecs": ["rot4:chunk=4096", "rot4"]})

    assert config.compression.codecs == ["rot4"]
    with pytest.raises(ValidationError, match="codec 'zip9'"):
        JobCreate(name="j", plan_id=1, compression={"codecs": ["zip9"]})


def test_a_lease_carries_the_jobs_codec_and_a_seed_of_its_own(world: World):
    world.job("async", compression=ROT4)

    first, second = (world.task(world.device()) for _ in range(2))

    assert (first.codec, second.codec) == ("rot4", "rot4")
    assert first.codec_seed != second.codec_seed
    assert world.lease(first).codec_seed == first.codec_seed


def test_a_slow_uplink_gets_the_smaller_codec_a_fast_one_the_exact_one(world: World):
    budget_seconds = 1.0
    world.job(
        "async",
        compression={"codecs": ["float32", "fp16"], "task_seconds": budget_seconds},
    )
    fast = eligible(uplink_bytes_per_second=float(update_size("float32", NUM_PARAMS)))
    slow = eligible(uplink_bytes_per_second=float(update_size("fp16", NUM_PARAMS)))

    assert world.task(world.device(), fast).codec == "float32"
    assert world.task(world.device(), slow).codec == "fp16"


def test_a_compressed_upload_is_folded_into_the_version_as_decoded(world: World):
    job = world.job("async", buffer_size=2, compression=ROT4)
    devices = [world.device() for _ in range(2)]
    tasks = [world.task(device) for device in devices]
    bodies = [
        encoded(tasks[0], [0.1, -0.2, 0.3, 0.4]),
        encoded(tasks[1], [1.0, 0.5, -0.5, 0.0]),
    ]

    world.upload(devices[0], tasks[0], bodies[0], num_examples=30)
    receipt = world.upload(devices[1], tasks[1], bodies[1], num_examples=10)

    decoded = [decode_update(body).decode().astype(np.float64) for body in bodies]
    expected = INITIAL_WEIGHTS + (30 * decoded[0] + 10 * decoded[1]) / 40
    assert receipt.global_version == 1
    np.testing.assert_allclose(world.weights(job, 1), expected, rtol=1e-6)


def test_bytes_up_are_counted_per_update_and_per_version(world: World):
    job = world.job("async", buffer_size=2, compression=ROT4)
    devices = [world.device() for _ in range(2)]
    tasks = [world.task(device) for device in devices]
    bodies = [encoded(task, [0.1, 0.2, 0.3, 0.4]) for task in tasks]

    for device, task, body in zip(devices, tasks, bodies, strict=True):
        world.upload(device, task, body)

    world.session.flush()
    counted = world.session.scalars(select(Update.upload_bytes).order_by(Update.id)).all()
    version = world.session.get_one(Version, (job.id, 1))
    assert counted == [len(body) for body in bodies]
    assert version.upload_bytes == sum(len(body) for body in bodies)


def test_the_upload_that_completes_a_version_is_folded_without_reading_its_blob_back(
    world: World,
):
    world.job("async", buffer_size=1, compression=ROT4)
    device = world.device()
    task = world.task(device)
    body = encoded(task, [0.1, 0.2, 0.3, 0.4])
    blob_reads: list[object] = []

    def watch(_conn, _cursor, statement, parameters, _context, _many):
        if statement.startswith("SELECT blobs.size, blobs.data"):  # get_blob's read
            blob_reads.append(parameters)

    engine = world.session.get_bind()
    event.listen(engine, "before_cursor_execute", watch)
    try:
        receipt = world.upload(device, task, body)
    finally:
        event.remove(engine, "before_cursor_execute", watch)

    stored = world.session.scalar(select(Update.delta_sha256))
    assert receipt.global_version == 1
    assert blob_reads  # the version's weights and optimizer state are read, as before
    assert not any(stored in str(parameters) for parameters in blob_reads)


def test_a_float32_lease_still_takes_a_format_1_vector(world: World):
    world.job("async")
    device = world.device()
    task = world.task(device)

    receipt = world.upload(device, task, encode_vector(np.full(NUM_PARAMS, 0.1, np.float32)))

    assert (task.codec, receipt.status) == ("float32", "accepted")


def refusals(task: Task) -> dict[str, tuple[bytes, str, str]]:
    """Bad uploads for a rot4 ``task``: body, reason, what the message says."""
    good = encoded(task, [0.1, 0.2, 0.3, 0.4])
    return {
        "another codec": (
            encoded(task, [0.1, 0.2, 0.3, 0.4], codec="rot2"),
            Reason.CODEC_MISMATCH,
            "asked for codec rot4, the update is encoded with rot2",
        ),
        "float32 for a rot4 lease": (
            encode_vector(np.zeros(NUM_PARAMS, np.float32)),
            Reason.CODEC_MISMATCH,
            "encoded with float32",
        ),
        "another seed": (
            encoded(task, [0.1, 0.2, 0.3, 0.4], seed=task.codec_seed + 1),
            Reason.SEED_MISMATCH,
            "encoded under seed",
        ),
        "another length": (
            encoded(task, [0.1, 0.2, 0.3]),
            Reason.INVALID_UPDATE,
            f"expected {NUM_PARAMS} weights, got 3",
        ),
        "an unknown codec id": (
            rechecksummed(good, 5, bytes([9])),
            Reason.INVALID_UPDATE,
            "unknown codec id 9",
        ),
        "a negative step": (
            rechecksummed(good, 40, struct.pack("<f", -1.0)),
            Reason.INVALID_UPDATE,
            "quantization step is negative",
        ),
        "a non-finite scale": (
            rechecksummed(good, 36, struct.pack("<f", float("inf"))),
            Reason.INVALID_UPDATE,
            "scale is not finite",
        ),
        "a corrupted body": (good[:-1] + bytes([good[-1] ^ 1]), Reason.INVALID_UPDATE, "checksum"),
    }


REFUSALS = [
    "another codec",
    "float32 for a rot4 lease",
    "another seed",
    "another length",
    "an unknown codec id",
    "a negative step",
    "a non-finite scale",
    "a corrupted body",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_an_upload_that_does_not_match_its_lease_is_refused_with_its_reason(world: World, case):
    job = world.job("async", buffer_size=1, compression=ROT4)
    device = world.device()
    task = world.task(device)
    cases = refusals(task)
    assert sorted(cases) == sorted(REFUSALS)
    body, reason, message = cases[case]

    with pytest.raises(InvalidUpdate, match=message) as refused:
        world.upload(device, task, body)

    assert refused.value.reason == reason
    assert world.current_version(job) == 0


def test_an_fp16_upload_holding_inf_is_refused_as_non_finite(world: World):
    world.job("async", compression={"codecs": ["fp16"]})
    device = world.device()
    task = world.task(device)
    good = encoded(task, [0.1, 0.2, 0.3, 0.4])
    body = rechecksummed(good, 36, np.array([np.inf], np.float16).tobytes())

    with pytest.raises(InvalidUpdate, match="NaN or Inf") as refused:
        world.upload(device, task, body)

    assert refused.value.reason == Reason.NON_FINITE


def test_a_compressed_update_above_the_norm_bound_is_clipped_to_it(world: World):
    job = world.job(
        "async", buffer_size=1, max_update_norm=1.0, norm_policy="clip", compression=ROT4
    )
    device = world.device()
    task = world.task(device)

    receipt = world.upload(device, task, encoded(task, [3.0, 4.0, 0.0, 0.0]))

    step = world.weights(job, 1).astype(np.float64) - INITIAL_WEIGHTS
    assert receipt.clipped
    assert float(np.linalg.norm(step)) == pytest.approx(1.0, rel=1e-5)


def test_a_dp_job_refuses_a_lossy_codec():
    with pytest.raises(ValidationError, match="a DP job takes float32 updates only"):
        JobCreate(
            name="j",
            plan_id=1,
            aggregation={"weighting": "uniform"},
            privacy={
                "mechanism": "gaussian",
                "participation": {"model": "capped", "population": 100, "window": 1},
                "noise_multiplier": 2.0,
                "delta": 1e-4,
                "epsilon_max": 10.0,
                "clipping": {"kind": "fixed", "clip_norm": 1.0},
            },
            compression=ROT4,
        )
