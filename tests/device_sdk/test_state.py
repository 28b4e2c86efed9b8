"""The agent's state directory: owner-only secrets, atomic writes, resuming after a power cut."""

import hashlib
import json
import os
import stat

import pytest

from device_sdk.state import (
    AgentState,
    PlanCache,
    PlanCacheError,
    StateCorruptError,
    StateError,
    StateStore,
    TaskInFlightError,
    write_atomic,
)
from fedge.clock import ManualClock
from fedge.protocol import HyperParameters, Task

TASK = Task(
    lease_id="lease-7",
    job_id=1,
    plan_sha256="a" * 64,
    plan_url="/v1/plans/a",
    global_version=3,
    weights_url="/v1/jobs/1/versions/3/weights",
    weights_sha256="b" * 64,
    hparams=HyperParameters(local_epochs=1, batch_size=8, learning_rate=0.1, momentum=0.9, mu=0.0),
    deadline=1_700_000_600.0,
    round=None,
)
REGISTERED = AgentState(device_id="dev-1", token="s3cret-token", server_url="http://coord:8000")
UPDATE = b"FDGW" + bytes(range(256)) * 4


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path / "state")


def trained(store):
    """Register, begin TASK and record its update as trained; return the state."""
    store.save(REGISTERED)
    return store.save_trained(
        REGISTERED.begin(TASK), UPDATE, num_examples=120, metrics={"train_loss": 0.4}
    )


def power_cut(monkeypatch, after=0):
    """Make os.replace fail, as if the power went, from its ``after``-th call on."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > after:
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def temporary_files(directory):
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# --- registration and files ------------------------------------------------------------------


def test_a_fresh_directory_has_no_state(store):
    assert store.load() is None


def test_registration_loads_back_in_a_new_process(store, tmp_path):
    store.save(REGISTERED)

    assert StateStore(tmp_path / "state").load() == REGISTERED


def test_the_state_directory_is_created_owner_only(store):
    assert mode(store.directory) == 0o700
    assert mode(store.updates) == 0o700
    assert mode(store.plans.directory) == 0o700


def test_token_file_is_created_owner_only(store, monkeypatch):
    # With an open umask and chmod forbidden, only creating the file 0600 can pass.
    monkeypatch.setattr(os, "chmod", None)
    monkeypatch.setattr(os, "fchmod", None)
    previous = os.umask(0)
    try:
        trained(store)
    finally:
        os.umask(previous)

    assert mode(store.token_path) == 0o600
    assert mode(store.state_path) == 0o600
    assert [mode(p) for p in store.updates.iterdir()] == [0o600]


def test_the_token_is_kept_out_of_the_state_file(store):
    store.save(REGISTERED)

    assert store.token_path.read_text() == "s3cret-token"
    assert "s3cret" not in store.state_path.read_text()


def test_the_token_file_is_written_only_when_the_token_changes(store, monkeypatch):
    store.save(REGISTERED)
    written = []
    monkeypatch.setattr(
        "device_sdk.state.write_atomic", lambda path, data, **_: written.append(path.name)
    )

    store.save(REGISTERED.begin(TASK))
    store.save(AgentState("dev-1", "new-token", REGISTERED.server_url))

    assert written == ["state.json", "token", "state.json"]


# --- atomic writes ---------------------------------------------------------------------------


def test_a_torn_write_leaves_the_previous_state(store, monkeypatch):
    store.save(REGISTERED)
    power_cut(monkeypatch)

    with pytest.raises(StateError, match="power cut"):
        store.save(REGISTERED.begin(TASK))

    assert store.load() == REGISTERED
    assert temporary_files(store.directory) == []


def test_a_write_cut_off_halfway_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_atomic(target, b"old and whole")
    real_write = os.write

    def half_then_die(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError("power cut")

    monkeypatch.setattr(os, "write", half_then_die)
    with pytest.raises(OSError):
        write_atomic(target, b"new and much longer than the old")

    assert target.read_bytes() == b"old and whole"
    assert temporary_files(tmp_path) == []


def test_a_big_write_is_written_whole(tmp_path):
    data = os.urandom(3 * 2**20)

    write_atomic(tmp_path / "blob", data)

    assert (tmp_path / "blob").read_bytes() == data


# --- unreadable state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"format": 1, "device_id": "dev-1", "serv',  # a torn file from another writer
        b"\xff\xfe garbage",
        b'{"format": 99, "device_id": "d", "server_url": "u", "task": null}',
        b'{"format": 1, "device_id": "d", "server_url": "u"}',
        b"[1, 2, 3]",
    ],
)
def test_an_unreadable_state_file_is_a_typed_error(store, content):
    store.save(REGISTERED)
    store.state_path.write_bytes(content)

    with pytest.raises(StateCorruptError, match="register this device again"):
        store.load()


def test_a_missing_or_empty_token_is_a_typed_error(store):
    store.save(REGISTERED)
    store.token_path.write_text("")

    with pytest.raises(StateCorruptError, match="empty"):
        store.load()
    store.token_path.unlink()
    with pytest.raises(StateCorruptError):
        store.load()


def test_a_task_record_naming_a_path_instead_of_a_sha256_is_corrupt(store):
    trained(store)
    body = json.loads(store.state_path.read_text())
    body["task"]["update_sha256"] = "../token"
    store.state_path.write_text(json.dumps(body))

    with pytest.raises(StateCorruptError):
        store.load()


# --- resuming after a power cut --------------------------------------------------------------


def test_a_training_cut_short_is_aborted_on_resume_never_trained_again(store, tmp_path):
    store.save(REGISTERED.begin(TASK))

    resumed = StateStore(tmp_path / "state").load()

    assert resumed.task.phase == "downloaded"
    assert resumed.task.on_resume == "abort"
    with pytest.raises(TaskInFlightError, match="lease-7"):
        resumed.begin(TASK)


def test_a_trained_update_is_uploaded_again_byte_for_byte_after_a_restart(store, tmp_path):
    trained(store)

    resumed_store = StateStore(tmp_path / "state")
    resumed = resumed_store.load()

    assert resumed.task.on_resume == "upload"
    assert resumed.task.task == TASK
    assert resumed.task.num_examples == 120
    assert resumed.task.metrics == {"train_loss": 0.4}
    assert resumed_store.read_update(resumed.task) == UPDATE


def test_an_acknowledged_update_is_forgotten_on_resume(store, tmp_path):
    state = trained(store)
    store.save(state.uploaded())

    resumed = StateStore(tmp_path / "state").load()

    assert resumed.task.on_resume == "forget"


def test_a_crash_between_saving_the_update_and_its_record_aborts_the_task(store, monkeypatch):
    store.save(REGISTERED)
    begun = REGISTERED.begin(TASK)
    store.save(begun)
    power_cut(monkeypatch, after=1)  # the update lands, the record saying so does not

    with pytest.raises(StateError):
        store.save_trained(begun, UPDATE, num_examples=120)
    monkeypatch.undo()

    assert store.load().task.on_resume == "abort"
    store.clear_task(begun)
    assert list(store.updates.iterdir()) == []  # the orphan went with the task


def test_only_a_trained_task_can_be_acknowledged(store):
    with pytest.raises(StateError, match="trained"):
        REGISTERED.begin(TASK).uploaded()


def test_clearing_a_task_deletes_its_saved_update(store):
    state = trained(store)

    cleared = store.clear_task(state)

    assert cleared.task is None
    assert store.load() == REGISTERED
    assert list(store.updates.iterdir()) == []


def test_a_tampered_update_is_refused_rather_than_uploaded(store):
    state = trained(store)
    (store.updates / f"{state.task.update_sha256}.fdgw").write_bytes(b"FDGW other bytes")

    with pytest.raises(StateCorruptError, match="sha256"):
        store.read_update(state.task)


def test_a_lost_update_is_a_typed_error(store):
    state = trained(store)
    for saved in store.updates.iterdir():
        saved.unlink()

    with pytest.raises(StateCorruptError, match="gone"):
        store.read_update(state.task)


def test_only_a_downloaded_task_can_be_recorded_as_trained(store):
    state = trained(store)

    with pytest.raises(StateError, match="downloaded"):
        store.save_trained(state, UPDATE, num_examples=1)
    with pytest.raises(StateError):
        store.save_trained(REGISTERED, UPDATE, num_examples=1)


# --- the plan cache --------------------------------------------------------------------------


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def clock():
    return ManualClock()


def test_a_cached_plan_reads_back_and_a_miss_is_none(tmp_path):
    cache = PlanCache(tmp_path)
    cache.put(sha(b"plan"), b"plan")

    assert cache.get(sha(b"plan")) == b"plan"
    assert cache.get(sha(b"other")) is None


def test_a_corrupt_entry_reads_as_a_miss_and_is_dropped(tmp_path):
    cache = PlanCache(tmp_path)
    cache.put(sha(b"plan"), b"plan")
    (tmp_path / sha(b"plan")).write_bytes(b"plan, bit-flipped")

    assert cache.get(sha(b"plan")) is None
    assert not (tmp_path / sha(b"plan")).exists()


def test_bytes_that_do_not_hash_to_their_key_are_refused(tmp_path):
    with pytest.raises(PlanCacheError, match="do not hash"):
        PlanCache(tmp_path).put(sha(b"plan"), b"another plan")


@pytest.mark.parametrize("key", ["../token", "A" * 64, "a" * 63, ""])
def test_a_key_that_is_not_a_sha256_is_refused(tmp_path, key):
    with pytest.raises(PlanCacheError, match="sha256"):
        PlanCache(tmp_path).get(key)


def test_least_recently_used_plans_are_evicted_past_the_size_cap(tmp_path, clock):
    cache = PlanCache(tmp_path, max_bytes=250, now=clock.now)
    plans = [bytes([i]) * 100 for i in range(3)]
    for plan in plans[:2]:
        cache.put(sha(plan), plan)
        clock.advance(10)
    cache.get(sha(plans[0]))  # plan 0 is now the most recently used
    clock.advance(10)

    cache.put(sha(plans[2]), plans[2])

    assert cache.get(sha(plans[1])) is None
    assert cache.get(sha(plans[0])) == plans[0]
    assert cache.total_bytes() == 200


def test_the_plan_just_cached_stays_even_if_larger_than_the_cap(tmp_path, clock):
    cache = PlanCache(tmp_path, max_bytes=50, now=clock.now)
    cache.put(sha(b"small"), b"small")
    clock.advance(1)

    cache.put(sha(b"x" * 100), b"x" * 100)

    assert cache.get(sha(b"x" * 100)) == b"x" * 100
    assert cache.get(sha(b"small")) is None


def test_a_crash_while_caching_leaves_no_entry(tmp_path, monkeypatch):
    cache = PlanCache(tmp_path)
    power_cut(monkeypatch)

    with pytest.raises(StateError):
        cache.put(sha(b"plan"), b"plan")
    monkeypatch.undo()

    assert cache.get(sha(b"plan")) is None
    assert list(tmp_path.iterdir()) == []
