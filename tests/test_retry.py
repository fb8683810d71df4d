"""helpers.retry: which errors are retried, Retry-After, backoff with a seed, error descriptions
and the advice they carry."""

from __future__ import annotations

import doctest
import email.utils
import socket
import ssl

import httpx2
import openai
import pytest

import helpers.retry
from helpers.retry import (
    Backoff,
    IncompleteStream,
    RequestTimeout,
    advice,
    classify,
    describe,
    parse_retry_after,
)

REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
ROOT_REQUEST = httpx2.Request("POST", "http://gpu-pod:8000/chat/completions")  # base URL without /v1
KEY_HINT = "set QWEN_API_KEY to the --api-key the server was started with"
URL_HINT = "check QWEN_BASE_URL; helpers.check_endpoint("


def status_error(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    message: str | None = None,
    request: httpx2.Request = REQUEST,
) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=request)
    client = openai.AsyncOpenAI(api_key="EMPTY", base_url="http://127.0.0.1:1/v1")
    return client._make_status_error(message or f"Error code: {status}", body=None, response=response)


def connection_error(cause: BaseException, request: httpx2.Request = REQUEST) -> openai.APIConnectionError:
    """openai's ``Connection error.`` raised from ``cause``, as the SDK raises it."""
    try:
        raise openai.APIConnectionError(request=request) from cause
    except openai.APIConnectionError as error:
        return error


DNS_FAILURES = [
    httpx2.ConnectError("[Errno -2] Name or service not known"),  # Linux, as httpx2 reports it
    httpx2.ConnectError("[Errno 8] nodename nor servname provided, or not known"),  # macOS
    httpx2.ConnectError("[Errno 11001] getaddrinfo failed"),  # Windows
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
]
CERTIFICATE_REFUSED = httpx2.ConnectError(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"
)
SSL_TO_PLAIN_HTTP = [
    httpx2.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
    httpx2.ConnectError("[SSL: RECORD_LAYER_FAILURE] record layer failure (_ssl.c:1000)"),
    ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
]


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


@pytest.mark.parametrize("cause", DNS_FAILURES, ids=str)
def test_a_host_name_that_does_not_resolve_is_not_retried(cause: Exception) -> None:
    assert not classify(connection_error(cause)).retryable
    assert not classify(cause).retryable


def test_a_temporary_dns_failure_is_retried() -> None:
    cause = httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")
    assert classify(connection_error(cause)).retryable
    assert classify(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")).retryable


@pytest.mark.parametrize("cause", SSL_TO_PLAIN_HTTP, ids=str)
def test_https_to_a_plain_http_server_is_not_retried(cause: Exception) -> None:
    assert not classify(connection_error(cause)).retryable


def test_an_untrusted_certificate_is_not_retried_and_not_called_plain_http() -> None:
    error = connection_error(CERTIFICATE_REFUSED)
    assert not classify(error).retryable
    assert "certificate" in advice(error) and "plain HTTP" not in advice(error)


def test_an_ssl_connection_cut_mid_response_is_still_retried() -> None:
    cut = httpx2.ReadError("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred (_ssl.c:2580)")
    assert classify(connection_error(cut)).retryable


def test_connection_refused_stays_retried_a_restarting_server_comes_back() -> None:
    assert classify(connection_error(httpx2.ConnectError("All connection attempts failed"))).retryable
    assert classify(connection_error(ConnectionRefusedError(111, "Connection refused"))).retryable


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
    assert text.startswith("Connection error. (caused by ConnectError: All connection attempts failed)")
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


# --- advice: what the user should do about an endpoint mistake --------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_advice_for_a_missing_or_wrong_key(status: int) -> None:
    assert KEY_HINT in advice(status_error(status))


def test_advice_for_a_404_without_v1_gives_the_base_url_to_use() -> None:
    hint = advice(status_error(404, request=ROOT_REQUEST))
    assert "the base URL must end in /v1 (QWEN_BASE_URL=http://gpu-pod:8000/v1)" in hint


def test_advice_for_a_404_with_no_request_url_shows_the_shape() -> None:
    error = status_error(404, request=REQUEST)
    error.request = None  # e.g. a wrapper that kept only the status
    error.response = None
    assert "the base URL must end in /v1 (QWEN_BASE_URL=http://HOST:8000/v1)" in advice(error)


def test_advice_for_a_404_about_the_model_names_qwen_model() -> None:
    vllm = "Error code: 404 - The model `Qwen3-0.6B` does not exist."
    hint = advice(status_error(404, message=vllm))
    assert "QWEN_MODEL" in hint and "must end in /v1" not in hint
    assert "diagnose(" in hint  # whose served_models lists them


@pytest.mark.parametrize("cause", DNS_FAILURES, ids=str)
def test_advice_for_a_host_that_does_not_resolve(cause: Exception) -> None:
    hint = advice(connection_error(cause, ROOT_REQUEST))
    assert "host" in hint and URL_HINT in hint
    assert "check_endpoint('http://gpu-pod:8000')" in hint  # the URL the request went to


def test_advice_for_nothing_listening_says_start_the_server() -> None:
    hint = advice(connection_error(httpx2.ConnectError("All connection attempts failed")))
    assert "vllm serve" in hint and URL_HINT in hint
    assert "127.0.0.1:1" in hint


@pytest.mark.parametrize("cause", SSL_TO_PLAIN_HTTP, ids=str)
def test_advice_for_https_to_a_plain_http_server_gives_the_http_url(cause: Exception) -> None:
    https = httpx2.Request("POST", "https://gpu-pod:8000/v1/chat/completions")
    hint = advice(connection_error(cause, https))
    assert "QWEN_BASE_URL=http://gpu-pod:8000/v1" in hint and URL_HINT in hint


def test_advice_for_an_answer_that_is_not_json() -> None:
    langchain = ValueError(
        "Unexpected response type from OpenAI-compatible endpoint. Expected a dict or "
        "openai.BaseModel, got str: '<html><body>Welcome to nginx!</body></html>'"
    )
    assert "not an OpenAI-compatible server; check QWEN_BASE_URL" in advice(langchain)
    sdk = openai.APIResponseValidationError(
        httpx2.Response(200, request=REQUEST), body="<html>", message="Data returned by API invalid"
    )
    assert "not an OpenAI-compatible server; check QWEN_BASE_URL" in advice(sdk)


@pytest.mark.parametrize(
    "error",
    [
        status_error(400),
        status_error(429),
        status_error(503),
        connection_error(httpx2.RemoteProtocolError("peer closed connection")),
        connection_error(httpx2.ReadError("")),
        IncompleteStream("cut"),
        RequestTimeout("no reply within 1 s"),
        ValueError("bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_no_advice_where_the_message_already_says_it_or_nothing_is_to_be_done(error: Exception) -> None:
    assert advice(error) is None


def test_describe_appends_the_advice() -> None:
    assert describe(status_error(401)) == f"Error code: 401. To fix: {KEY_HINT}"
    text = describe(connection_error(httpx2.ConnectError("[Errno -2] Name or service not known")))
    assert text.startswith("Connection error. (caused by ConnectError: [Errno -2] Name or service not known)")
    assert URL_HINT in text
    assert describe(status_error(503)) == "Error code: 503"  # nothing to advise


# --- a server started without the tool-calling flags (issue 9) -----------------------------------

TOOL_FLAG_REFUSALS = [
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    'tool_choice="required" requires --tool-call-parser to be set',
    'tool_choice=function "get_weather" requires --tool-call-parser to be set',
]


@pytest.mark.parametrize("message", TOOL_FLAG_REFUSALS)
def test_advice_for_tools_refused_gives_the_full_serve_command(message: str) -> None:
    error = status_error(400, message=f"Error code: 400 - {{'error': {{'message': {message!r}}}}}")
    assert not classify(error).retryable
    hint = advice(error)
    assert "vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3 " in hint
    assert hint.endswith("--reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser hermes`")
    text = describe(error)
    assert text.count("--enable-auto-tool-choice --tool-call-parser hermes") == 1
    assert text.startswith("Error code: 400")


def test_advice_is_not_repeated_when_the_message_already_has_it() -> None:
    from helpers.errors import SERVE_HINT, TOOLS_HINT

    message = f"{TOOL_FLAG_REFUSALS[0]}. To fix: {TOOLS_HINT}"  # what helpers.chat raises
    assert describe(status_error(400, message=message)).count(SERVE_HINT) == 1
