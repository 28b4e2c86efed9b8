"""The device session's protocol logic, driven step by step without any I/O."""

from dataclasses import replace

import numpy as np
import pytest

from device_sdk.session import (
    Abort,
    Backoff,
    CheckIn,
    Download,
    Failure,
    Heartbeats,
    Interrupted,
    Sleep,
    Train,
    Upload,
    device_session,
)
from device_sdk.trainer import TrainResult
from fedge.protocol import (
    METRIC_WITHIN_CLIP,
    EligibilityFacts,
    HyperParameters,
    Reason,
    RetryWindow,
    Task,
    UploadReceipt,
)
from fedge.wire import decode_vector

TASK = Task(
    lease_id="lease-1",
    job_id=1,
    plan_sha256="p" * 64,
    plan_url="/v1/plans/p",
    global_version=3,
    weights_url="/v1/jobs/1/versions/3/weights",
    weights_sha256="w" * 64,
    hparams=HyperParameters(local_epochs=1, batch_size=8, learning_rate=0.1, momentum=0.0, mu=0.0),
    deadline=1000.0,
    round=None,
)
TRAINED = TrainResult(delta=np.ones(4, np.float32), num_examples=12, metrics={"train_loss": 0.5})
RECEIPT = UploadReceipt(
    status="accepted", lease_id="lease-1", global_version=3, staleness=0, clipped=False
)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def start(clock=None, **kwargs):
    session = device_session(
        lambda: EligibilityFacts(num_examples=12),
        rng=np.random.default_rng(0),
        now=clock or Clock(),
        **kwargs,
    )
    return session, next(session)


def through_training(session):
    """Answer the downloads and the training of TASK; return the upload action."""
    assert session.send(TASK) == Download(TASK.plan_url, TASK.plan_sha256, "plan")
    assert session.send(b"plan") == Download(TASK.weights_url, TASK.weights_sha256, "weights")
    train = session.send(b"weights")
    assert train == Train(TASK, b"plan", b"weights")
    return session.send(TRAINED)


def test_a_task_is_downloaded_trained_and_uploaded_then_the_device_checks_in_again():
    session, first = start()
    assert isinstance(first, CheckIn)

    upload = through_training(session)

    assert isinstance(upload, Upload)
    assert upload.num_examples == 12 and upload.metrics == {"train_loss": 0.5}
    assert isinstance(session.send(RECEIPT), CheckIn)


def test_a_retry_window_is_slept_with_jitter_inside_it():
    session, _ = start()

    sleeps = [session.send(RetryWindow(min=30, max=90, reason="full")) for _ in range(1)]
    waits = [sleeps[0].seconds]
    for _ in range(20):
        assert isinstance(session.send(None), CheckIn)
        waits.append(session.send(RetryWindow(min=30, max=90, reason="full")).seconds)

    assert all(30 <= w <= 90 for w in waits)
    assert len(set(waits)) > 15  # jittered, not a constant


def test_check_in_failures_back_off_exponentially_with_full_jitter():
    session, _ = start(backoff=Backoff(base=1.0, cap=8.0))

    waits = []
    for _ in range(6):
        sleep = session.send(Failure(0, "transport"))
        waits.append(sleep.seconds)
        assert isinstance(session.send(None), CheckIn)

    bounds = [1, 2, 4, 8, 8, 8]
    assert all(0 <= w <= b for w, b in zip(waits, bounds, strict=True))


def test_retry_after_is_honoured():
    session, _ = start()

    sleep = session.send(Failure(429, "rate_limited", retry_after=17.0))

    assert sleep == Sleep(17.0, "check-in failed: rate_limited")


def test_a_check_in_shed_by_an_overloaded_coordinator_waits_its_retry_after_and_checks_in_again():
    session, _ = start()

    sleep = session.send(Failure(503, Reason.OVERLOADED, retry_after=12.0))

    assert sleep == Sleep(12.0, "check-in failed: overloaded")
    assert isinstance(session.send(None), CheckIn)


def test_a_lost_upload_is_retried_with_the_same_bytes_until_it_is_acknowledged():
    session, _ = start()
    upload = through_training(session)

    assert isinstance(session.send(Failure(0, "transport")), Sleep)
    retried = session.send(None)
    assert isinstance(session.send(Failure(503, "unavailable")), Sleep)
    again = session.send(None)

    assert retried == upload and again == upload
    assert isinstance(session.send(RECEIPT), CheckIn)


def test_a_refused_upload_is_not_retried():
    session, _ = start()
    through_training(session)

    after = session.send(Failure(409, "stale", "update is 30 versions stale"))

    assert isinstance(after, CheckIn)


def test_an_upload_is_given_up_once_the_lease_deadline_has_passed():
    clock = Clock()
    session, _ = start(clock)
    through_training(session)
    clock.t = TASK.deadline + 1

    after = session.send(Failure(0, "transport"))

    assert isinstance(after, CheckIn)


def test_losing_eligibility_mid_training_aborts_and_reports_it():
    session, _ = start()
    session.send(TASK)
    session.send(b"plan")
    session.send(b"weights")

    abort = session.send(Interrupted("battery"))

    assert abort == Abort(TASK, "battery")
    assert isinstance(session.send(None), CheckIn)


def test_a_lease_closed_mid_training_ends_the_task_without_an_abort_or_an_upload():
    session, _ = start()
    session.send(TASK)
    session.send(b"plan")
    session.send(b"weights")

    after = session.send(Interrupted(Reason.LEASE_CLOSED))  # a heartbeat was refused: round closed

    assert isinstance(after, CheckIn)  # nothing to abort, nothing to upload: next task


def test_a_download_that_cannot_succeed_aborts_the_task_saying_which_and_why():
    session, _ = start()
    session.send(TASK)

    abort = session.send(Failure(404, "not_found", "no plan abc"))

    assert abort == Abort(TASK, "error", "download of the plan failed: not_found: no plan abc")


def test_a_plan_the_runtime_cannot_load_is_aborted_as_bad_plan_with_its_cause():
    session, _ = start()
    session.send(TASK)
    session.send(b"plan")
    session.send(b"weights")

    abort = session.send(Failure(0, "bad_plan", "the plan does not expose Fedge's signatures"))

    assert abort == Abort(TASK, "bad_plan", "bad_plan: the plan does not expose Fedge's signatures")


def test_the_session_ends_after_max_tasks_and_returns_its_stats():
    session, _ = start(max_tasks=1)
    through_training(session)

    with pytest.raises(StopIteration) as done:
        session.send(RECEIPT)

    stats = done.value.value
    assert (stats.tasks, stats.uploads_accepted, stats.check_ins) == (1, 1, 1)
    assert stats.receipts == [RECEIPT]


# --- the heartbeat policy performers ask ------------------------------------------------------


def test_a_task_that_asks_for_no_heartbeats_is_never_due():
    beats = Heartbeats.for_task(TASK, handed_out=100.0)

    assert beats.interval is None
    assert not beats.is_due(1e12)


def test_the_first_heartbeat_is_due_one_interval_after_the_task_was_handed_out():
    beats = Heartbeats.for_task(replace(TASK, heartbeat_seconds=30.0), handed_out=100.0)

    assert not beats.is_due(129.9)
    assert beats.is_due(130.0)


def test_each_heartbeat_makes_the_next_due_one_interval_after_it():
    beats = Heartbeats.for_task(replace(TASK, heartbeat_seconds=30.0), handed_out=100.0)

    beats.sent(145.0)

    assert beats.due == 175.0
    assert not beats.is_due(174.0)
    assert beats.is_due(175.0)


@pytest.mark.parametrize("status", [403, 404, 409])
def test_a_heartbeat_refused_because_the_lease_is_gone_stops_the_training(status):
    assert not Heartbeats.lease_alive(Failure(status, "lease_closed"))


@pytest.mark.parametrize(
    "answer",
    [2000.0, Failure(0, "transport"), Failure(500, "internal"), Failure(429, "busy", "", 5.0)],
)
def test_an_acknowledged_or_lost_heartbeat_lets_the_training_go_on(answer):
    assert Heartbeats.lease_alive(answer)


def upload_of(task, trained):
    """The upload action a session makes for ``task`` after training ``trained``."""
    session, _ = start()
    session.send(task)
    session.send(b"plan")
    session.send(b"weights")
    return session.send(trained)


def test_a_task_with_a_clip_norm_uploads_the_delta_clipped_to_it_and_says_it_was_longer():
    task = replace(TASK, clip_norm=1.0)  # TRAINED's delta has norm 2

    upload = upload_of(task, TRAINED)

    assert isinstance(upload, Upload)
    np.testing.assert_allclose(decode_vector(upload.update), np.full(4, 0.5), rtol=1e-6)
    assert upload.metrics == {"train_loss": 0.5, METRIC_WITHIN_CLIP: 0.0}


def test_a_delta_within_the_clip_norm_is_uploaded_unchanged_with_its_bit_set():
    task = replace(TASK, clip_norm=3.0)

    upload = upload_of(task, TRAINED)

    np.testing.assert_array_equal(decode_vector(upload.update), TRAINED.delta)
    assert upload.metrics[METRIC_WITHIN_CLIP] == 1.0


def test_a_task_without_a_clip_norm_uploads_the_delta_as_trained():
    upload = upload_of(TASK, TRAINED)

    np.testing.assert_array_equal(decode_vector(upload.update), TRAINED.delta)
    assert METRIC_WITHIN_CLIP not in upload.metrics


def test_a_non_finite_delta_that_cannot_be_clipped_aborts_the_task():
    broken = replace(TRAINED, delta=np.array([np.inf, 0, 0, 0], np.float32))

    action = upload_of(replace(TASK, clip_norm=1.0), broken)

    assert action == Abort(replace(TASK, clip_norm=1.0), "error")


def test_a_task_with_a_codec_uploads_the_delta_encoded_with_it_under_the_tasks_seed():
    from fedge.wire import decode_update

    task = replace(TASK, codec="rot4", codec_seed=99)

    upload = upload_of(task, TRAINED)

    payload = decode_update(upload.update, expected_length=4, expected_seed=99)
    assert payload.codec.name == "rot4"
    np.testing.assert_allclose(payload.decode(), TRAINED.delta, atol=0.2)


def test_a_float32_task_uploads_a_plain_format_1_vector():
    upload = upload_of(replace(TASK, codec="float32", codec_seed=5), TRAINED)

    np.testing.assert_array_equal(decode_vector(upload.update), TRAINED.delta)


def test_a_task_naming_a_codec_this_device_does_not_know_aborts_it_as_an_error():
    task = replace(TASK, codec="zip9")

    action = upload_of(task, TRAINED)

    assert action == Abort(task, "error")
