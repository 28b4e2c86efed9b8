"""client.attempt: the one place a refusal or a lost connection becomes the session's Failure."""

import httpx
import pytest

from device_sdk.client import CoordinatorClient, attempt
from device_sdk.session import Failure
from fedge.protocol import EligibilityFacts, RetryWindow


def _client(answer):
    return CoordinatorClient("http://coordinator", token="t", transport=httpx.MockTransport(answer))


def test_an_answered_request_returns_its_answer():
    retry = {"retry": {"min": 5.0, "max": 10.0, "reason": "no job"}}
    with _client(lambda request: httpx.Response(200, json=retry)) as client:
        answer = attempt(lambda: client.check_in(EligibilityFacts(num_examples=3)))

    assert answer == RetryWindow(min=5.0, max=10.0, reason="no job")


def test_a_refusal_becomes_a_failure_with_the_servers_status_reason_and_retry_after():
    refused = httpx.Response(
        503, json={"error": "overloaded", "message": "later"}, headers={"Retry-After": "7"}
    )
    with _client(lambda request: refused) as client:
        answer = attempt(lambda: client.check_in(EligibilityFacts(num_examples=3)))

    assert answer == Failure(503, "overloaded", "later", 7.0)
    assert answer.retryable


@pytest.mark.parametrize("lost", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_a_lost_connection_becomes_a_transport_failure(lost):
    def drop(request):
        raise lost

    with _client(drop) as client:
        answer = attempt(lambda: client.download("/v1/plans/p"))

    assert isinstance(answer, Failure)
    assert (answer.status, answer.reason) == (0, "transport")
