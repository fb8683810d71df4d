"""helpers.retry: which errors are retried, Retry-After, backoff with a seed, error descriptions."""

from __future__ import annotations

import doctest
import email.utils

import httpx2
import openai
import pytest

import helpers.retry
from helpers.retry import (
    Backoff,
    IncompleteStream,
    RequestTimeout,
    classify,
    describe,
    parse_retry_after,
)

REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST)
    client = openai.AsyncOpenAI(api_key="EMPTY", base_url="http://127.0.0.1:1/v1")
    return client._make_status_error(f"Error code: {status}", body=None, response=response)


def test_doctests_in_the_module_pass() -> None:
    assert doctest.testmod(helpers.retry).failed == 0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_http_statuses_are_retried(status: int) -> None:
    verdict = classify(status_error(status))
    assert verdict.retryable and verdict.status == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    verdict = classify(status_error(status))
    assert not verdict.retryable and verdict.status == status


def test_openai_maps_statuses_to_the_classes_users_see() -> None:
    assert type(status_error(429)).__name__ == "RateLimitError"
    assert type(status_error(503)).__name__ == "InternalServerError"
    assert type(status_error(400)).__name__ == "BadRequestError"


@pytest.mark.parametrize(
    "error",
    [
        openai.APIConnectionError(request=REQUEST),
        openai.APITimeoutError(request=REQUEST),
        httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx2.ConnectError("All connection attempts failed"),
        httpx2.ReadError("read failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        IncompleteStream("cut"),
        RequestTimeout("no reply within 1 s"),
        TimeoutError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_problems_timeouts_and_cut_streams_are_retried(error: Exception) -> None:
    assert classify(error).retryable


def test_langchains_provider_neutral_errors_say_whether_to_retry() -> None:
    from langchain_core.exceptions import ModelConnectionError, ModelInvalidRequestError

    assert classify(ModelConnectionError("unreachable")).retryable
    assert not classify(ModelInvalidRequestError("bad")).retryable


@pytest.mark.parametrize("error", [ValueError("bad"), KeyError("x"), RuntimeError("bug")])
def test_errors_of_the_client_code_are_not_retried(error: Exception) -> None:
    assert not classify(error).retryable


def test_retry_after_seconds_from_a_429_is_kept() -> None:
    assert classify(status_error(429, {"retry-after": "3"})).retry_after_s == 3.0
    assert classify(status_error(503, {"retry-after-ms": "1500"})).retry_after_s == 1.5
    assert classify(status_error(429)).retry_after_s is None
    assert classify(status_error(400, {"retry-after": "3"})).retry_after_s is None


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 5)}, now=now) == 0.0


@pytest.mark.parametrize("value", ["soon", "", "nan"])
def test_unparseable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None


def test_backoff_grows_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = Backoff(base_s=0.5, factor=2.0, max_s=3.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_with_a_seed_is_reproducible_and_jitter_stays_in_range() -> None:
    first = [Backoff(seed=7, jitter=1.0).delay(n) for n in range(1, 6)]
    again = [Backoff(seed=7, jitter=1.0).delay(n) for n in range(1, 6)]
    other = [Backoff(seed=8, jitter=1.0).delay(n) for n in range(1, 6)]
    assert first == again
    assert first != other
    policy = Backoff(base_s=1.0, factor=2.0, max_s=100.0, jitter=0.5, seed=1)
    for attempt in range(1, 8):
        full = 2.0 ** (attempt - 1)
        assert full / 2 <= policy.delay(attempt) <= full


def test_retry_after_is_a_minimum_and_is_capped() -> None:
    policy = Backoff(base_s=0.1, jitter=0.0, max_retry_after_s=5.0)
    assert policy.delay(1, retry_after_s=2.0) == 2.0
    assert policy.delay(1, retry_after_s=0.01) == 0.1
    assert policy.delay(1, retry_after_s=3600.0) == 5.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"base_s": -1}, ">= 0"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_bad_backoff_settings_are_refused(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**arguments)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().delay(0)


def test_describe_gives_the_status_and_the_cause() -> None:
    assert describe(status_error(503)).startswith("Error code: 503")
    try:
        raise openai.APIConnectionError(request=REQUEST) from httpx2.ConnectError(
            "All connection attempts failed"
        )
    except openai.APIConnectionError as error:
        text = describe(error)
    assert text == "Connection error. (caused by ConnectError: All connection attempts failed)"
    assert describe(ValueError()) == "ValueError"


def test_describe_follows_wrappers_down_to_the_root_cause() -> None:
    try:
        try:
            try:
                raise httpx2.RemoteProtocolError("peer closed connection")
            except httpx2.RemoteProtocolError as inner:
                raise openai.APIConnectionError(request=REQUEST) from inner
        except openai.APIConnectionError as middle:
            raise RuntimeError("Connection error.") from middle
    except RuntimeError as error:
        text = describe(error)
    assert text == "Connection error. (caused by RemoteProtocolError: peer closed connection)"


def test_describe_names_a_root_cause_that_has_no_message() -> None:
    """The server dying mid-response gives httpx2.ReadError('') under 'Connection error.'."""
    try:
        try:
            raise httpx2.ReadError("", request=REQUEST)
        except httpx2.ReadError as inner:
            raise openai.APIConnectionError(request=REQUEST) from inner
    except openai.APIConnectionError as error:
        assert describe(error) == "Connection error. (caused by ReadError)"
