"""Bad input, end to end: what a user sees in amap's outcomes when the endpoint or a request is wrong.

``tests/test_endpoint.py`` already checks ``diagnose``/``check_endpoint`` for each endpoint mistake,
and ``tests/test_concurrency.py`` the argument checks of ``amap`` (empty list, non-string or empty
prompt, ``concurrency=0``). Here the same mistakes go through the kit's chat model and ``amap``
over real HTTP, as in a notebook that skipped ``check_endpoint``: every prompt must come back as an
outcome whose error says what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from support import free_port, html_server

from helpers.chat import make_chat_model
from helpers.concurrency import amap
from helpers.diagnosis import check_endpoint
from helpers.endpoint import Endpoint
from helpers.errors import EndpointError
from helpers.outcomes import Outcome
from helpers.retry import Backoff
from helpers.sim import SimServer, serve

KEY = "sk-resilience-right-key-42"
FAST = Backoff(base_s=0.01, max_s=0.02, seed=0)
URL_HINTS = ("QWEN_BASE_URL", "check_endpoint", "diagnose")


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[SimServer]:
    with serve(profile="instant", api_key=KEY, max_model_len=512, answer_tokens_mean=8) as server:
        yield server


@pytest.fixture
def not_json_server() -> Iterator[str]:
    """A web server answering HTML, as a base URL."""
    with html_server() as address:
        yield f"http://{address}/v1"


def one_outcome(endpoint: Endpoint, prompt: str = "你好", **model_settings: object) -> Outcome:
    model = make_chat_model(thinking=False, endpoint=endpoint, **model_settings)  # type: ignore[arg-type]
    outcomes = asyncio.run(amap(model, [prompt, "1+1=?"], retries=1, backoff=FAST, progress=False))
    assert len(outcomes) == 2 and all(o.ok or o.error for o in outcomes)  # nothing lost
    assert not outcomes[0].ok and outcomes[0].error_type
    return outcomes[0]


def says(text: str, *hints: str) -> bool:
    return any(hint in text for hint in hints)


# --- the endpoint is wrong -------------------------------------------------------------------


def test_wrong_host_outcome_names_the_host_problem_and_the_fix() -> None:
    outcome = one_outcome(Endpoint("http://no-such-host.invalid:8000/v1"))
    assert "Name or service not known" in outcome.error or "not known" in outcome.error
    assert says(outcome.error, *URL_HINTS), outcome.error


def test_wrong_port_outcome_says_nothing_listens_and_what_to_do() -> None:
    outcome = one_outcome(Endpoint(f"http://127.0.0.1:{free_port()}/v1"))
    assert outcome.error_type == "OpenAIConnectionError"
    assert says(outcome.error, *URL_HINTS, "vllm serve"), outcome.error


@pytest.mark.server
def test_url_without_v1_outcome_says_add_v1(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.root_url, api_key=KEY))
    assert outcome.attempts == 1  # a 404 is not retried
    assert "/v1" in outcome.error, outcome.error


@pytest.mark.server
def test_https_to_the_http_simulator_outcome_says_use_http(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url.replace("http://", "https://"), api_key=KEY))
    assert "SSL" in outcome.error or "ssl" in outcome.error
    assert says(outcome.error, "http://", *URL_HINTS), outcome.error


@pytest.mark.server
def test_missing_key_outcome_says_set_the_key(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url))
    assert outcome.error_type == "OpenAIAuthenticationError" and outcome.attempts == 1
    assert "QWEN_API_KEY" in outcome.error, outcome.error


@pytest.mark.server
def test_wrong_key_outcome_says_set_the_key_and_never_shows_it(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url, api_key="sk-wrong-key-0000"))
    assert outcome.error_type == "OpenAIAuthenticationError" and outcome.attempts == 1
    assert "sk-wrong-key-0000" not in outcome.error and KEY not in outcome.error
    assert "QWEN_API_KEY" in outcome.error, outcome.error


@pytest.mark.server
def test_wrong_model_outcome_lists_the_served_models(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url, model="Qwen3-0.6B", api_key=KEY))
    assert outcome.attempts == 1
    assert "Qwen3-0.6B" in outcome.error and "Qwen/Qwen3-0.6B" in outcome.error, outcome.error


def test_a_server_that_answers_html_is_named_not_openai_compatible(not_json_server: str) -> None:
    with pytest.raises(EndpointError, match="not an OpenAI-compatible model list"):
        check_endpoint(not_json_server, timeout=5)
    outcome = one_outcome(Endpoint(not_json_server))
    assert outcome.attempts == 1  # not retried: the answer will not change
    assert "<html>" in outcome.error  # the start of what came back
    assert says(outcome.error, "OpenAI-compatible server", *URL_HINTS), outcome.error


# --- the request is wrong: refused by the server with a 400 that says what to change ----------


@pytest.mark.server
def test_prompt_over_the_context_length(keyed_sim: SimServer) -> None:
    endpoint = Endpoint(keyed_sim.base_url, api_key=KEY)
    outcome = one_outcome(endpoint, "词" * 2000, max_tokens=16)
    assert outcome.attempts == 1
    assert "maximum context length is 512" in outcome.error
    assert "reduce the length of the input prompt" in outcome.error


@pytest.mark.server
def test_max_tokens_too_large(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url, api_key=KEY), max_tokens=100_000)
    assert outcome.attempts == 1
    assert "max_tokens=100000 cannot be greater than max_model_len=512" in outcome.error
    assert "request fewer output tokens" in outcome.error


@pytest.mark.server
def test_negative_temperature(keyed_sim: SimServer) -> None:
    outcome = one_outcome(Endpoint(keyed_sim.base_url, api_key=KEY), temperature=-0.5)
    assert outcome.attempts == 1
    assert "temperature must be non-negative, got -0.5" in outcome.error
