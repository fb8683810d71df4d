"""helpers.endpoint: resolving, diagnosing every common failure, and keeping the key out of sight."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import free_port, html_server, load_transcript

import helpers.endpoint as endpoint_module
from helpers.diagnosis import check_endpoint, diagnose
from helpers.endpoint import DEFAULT_MODEL, PLACEHOLDER_API_KEY, Endpoint, resolve_endpoint
from helpers.errors import SERVE_HINT, EndpointError, connect_failure
from helpers.retry import classify
from helpers.sim import serve

SECRET = "sk-very-secret-123"


def vllm_like(api_key: str | None = None, served=("Qwen/Qwen3-0.6B", "Qwen-0.6B")):
    """A MockTransport routing like vLLM 0.32 (bodies from the transcripts)."""
    models = load_transcript("qwen3-parser-models").json()
    models["data"] = [dict(models["data"][0], id=name) for name in served]

    def handler(request: httpx.Request) -> httpx.Response:
        authorized = request.headers.get("authorization") == f"Bearer {api_key}"
        if api_key and request.url.path.startswith("/v1/") and not authorized:
            return httpx.Response(401, json={"error": "Unauthorized"})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=models)
        if request.url.path == "/version":
            return httpx.Response(200, json=load_transcript("qwen3-parser-version").json())
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handler)


@pytest.fixture(name="html_server")
def html_server_fixture() -> Iterator[str]:
    """A plain-HTTP web server that is not an OpenAI API (like a default nginx page)."""
    with html_server() as address:
        yield address


# --- resolving -----------------------------------------------------------------------------------


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_BASE_URL", "http://env-host:8000/v1")
    monkeypatch.setenv("QWEN_MODEL", "env-model")
    monkeypatch.setenv("QWEN_API_KEY", "env-key")
    endpoint = resolve_endpoint("http://arg-host:8000/v1/", "arg-model", "arg-key")
    assert endpoint.base_url == "http://arg-host:8000/v1"
    assert endpoint.model == "arg-model"
    assert endpoint.api_key.get_secret_value() == "arg-key"
    assert endpoint.kind == "server"


def test_environment_qwen_first_then_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai-env:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    endpoint = resolve_endpoint()
    assert endpoint.base_url == "http://openai-env:8000/v1"
    assert endpoint.api_key.get_secret_value() == "openai-key"
    assert endpoint.model == DEFAULT_MODEL
    monkeypatch.setenv("QWEN_BASE_URL", "http://qwen-env:8000/v1")
    monkeypatch.setenv("QWEN_API_KEY", "qwen-key")
    monkeypatch.setenv("QWEN_MODEL", "Qwen-0.6B")
    endpoint = resolve_endpoint()
    assert endpoint.base_url == "http://qwen-env:8000/v1"
    assert endpoint.api_key.get_secret_value() == "qwen-key"
    assert endpoint.model == "Qwen-0.6B"


def test_no_key_means_the_placeholder_vllm_accepts() -> None:
    endpoint = resolve_endpoint("http://h:8000/v1")
    assert endpoint.api_key.get_secret_value() == PLACEHOLDER_API_KEY


def test_key_never_in_repr_str_or_messages() -> None:
    endpoint = Endpoint("http://127.0.0.1:9/v1", api_key=SECRET)
    diagnosis = diagnose(endpoint, timeout=1)
    texts = [repr(endpoint), str(endpoint), endpoint.describe(timeout=1), str(diagnosis)]
    texts.append(repr(diagnosis))
    with pytest.raises(EndpointError) as raised:
        check_endpoint(endpoint, timeout=1)
    texts.append(str(raised.value))
    for text in texts:
        assert SECRET not in text
    assert endpoint.headers()["Authorization"] == f"Bearer {SECRET}"


def test_plain_string_key_is_wrapped() -> None:
    endpoint = Endpoint("http://h/v1", api_key=SECRET)
    assert SECRET not in repr(endpoint.api_key)
    assert endpoint.root_url == "http://h"


# --- diagnosing: every failure has a message that says what to do --------------------------------


def test_healthy_vllm() -> None:
    diagnosis = diagnose("http://gpu-pod:8000/v1", transport=vllm_like())
    assert diagnosis.ok, str(diagnosis)
    assert [check.name for check in diagnosis.checks] == ["url", "connect", "api", "server", "model"]
    assert diagnosis.server == "vLLM 0.32.0"
    assert diagnosis.served_models == ("Qwen/Qwen3-0.6B", "Qwen-0.6B")


def test_connection_refused() -> None:
    port = free_port()
    diagnosis = diagnose(f"http://127.0.0.1:{port}/v1", timeout=2)
    assert not diagnosis.ok
    assert diagnosis.failure.name == "connect"
    assert "Connection refused" in diagnosis.failure.message
    assert "vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3" in diagnosis.failure.message


def test_host_not_found() -> None:
    diagnosis = diagnose("http://no-such-host.invalid:8000/v1", timeout=5)
    assert diagnosis.failure.name == "connect"
    assert "Host not found: 'no-such-host.invalid'" in diagnosis.failure.message


def test_host_not_found_from_the_resolver_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from exc

    diagnosis = diagnose("http://gpu-pdo:8000/v1", transport=httpx.MockTransport(handler))
    assert "Host not found: 'gpu-pdo'" in diagnosis.failure.message


def test_read_timeout_on_a_server_that_never_answers() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the TCP connection (backlog), never answers
        port = silent.getsockname()[1]
        diagnosis = diagnose(f"http://127.0.0.1:{port}/v1", timeout=0.3)
    assert "no answer within 0.3 s" in diagnosis.failure.message


def test_connect_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    diagnosis = diagnose("http://10.1.2.3:8000/v1", transport=httpx.MockTransport(handler))
    assert "No connection to 10.1.2.3:8000 within" in diagnosis.failure.message
    assert "firewall" in diagnosis.failure.message


def test_url_without_v1_suggests_the_fixed_url() -> None:
    diagnosis = diagnose("http://gpu-pod:8000", transport=vllm_like())
    assert diagnosis.failure.name == "url"
    assert "QWEN_BASE_URL=http://gpu-pod:8000/v1" in diagnosis.failure.message


def test_not_an_http_url() -> None:
    for url in ("gpu-pod:8000/v1", "ftp://gpu-pod/v1", "not a url"):
        diagnosis = diagnose(url)
        assert diagnosis.failure.name == "url"
        assert "http://HOST:8000/v1" in diagnosis.failure.message


def test_missing_key_and_wrong_key() -> None:
    missing = diagnose("http://h:8000/v1", transport=vllm_like(api_key=SECRET))
    assert missing.failure.name == "auth"
    assert "wants an API key" in missing.failure.message
    assert "QWEN_API_KEY" in missing.failure.message and "--api-key" in missing.failure.message
    wrong = diagnose("http://h:8000/v1", api_key="sk-wrong", transport=vllm_like(api_key=SECRET))
    assert "rejected the API key" in wrong.failure.message
    assert "sk-wrong" not in str(wrong)
    right = diagnose("http://h:8000/v1", api_key=SECRET, transport=vllm_like(api_key=SECRET))
    assert right.ok


def test_unknown_model_lists_the_served_ones() -> None:
    diagnosis = diagnose("http://h:8000/v1", model="Qwen3-0.6B", transport=vllm_like())
    assert diagnosis.failure.name == "model"
    assert "Served: Qwen/Qwen3-0.6B, Qwen-0.6B" in diagnosis.failure.message
    assert "QWEN_MODEL" in diagnosis.failure.message


def test_not_openai_compatible_html(html_server: str) -> None:
    diagnosis = diagnose(f"http://{html_server}/v1", timeout=5)
    assert diagnosis.failure.name == "api"
    assert "text/html" in diagnosis.failure.message
    assert "not an OpenAI-compatible" in diagnosis.failure.message


def test_json_but_not_openai() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"status": "ok"}))
    diagnosis = diagnose("http://h:8000/v1", transport=transport)
    assert diagnosis.failure.name == "api"
    assert "'data' list" in diagnosis.failure.message


def test_https_to_a_plain_http_server(html_server: str) -> None:
    diagnosis = diagnose(f"https://{html_server}/v1", timeout=5)
    assert diagnosis.failure.name == "connect"
    assert "speaks plain HTTP" in diagnosis.failure.message
    assert f"Use http://{html_server}/v1" in diagnosis.failure.message


def test_openai_compatible_server_without_version_still_passes() -> None:
    models = {"object": "list", "data": [{"id": DEFAULT_MODEL, "object": "model"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=models)
        return httpx.Response(404)

    diagnosis = diagnose("http://h:8000/v1", transport=httpx.MockTransport(handler))
    assert diagnosis.ok and diagnosis.server is None


def test_check_endpoint_raises_the_user_message() -> None:
    port = free_port()
    with pytest.raises(EndpointError, match="Connection refused") as raised:
        check_endpoint(f"http://127.0.0.1:{port}/v1", timeout=2)
    assert raised.value.check == "connect"


def test_describe_never_raises() -> None:
    line = Endpoint(f"http://127.0.0.1:{free_port()}/v1").describe(timeout=1)
    assert line.startswith("Talking to an OpenAI-compatible server at http://127.0.0.1:")
    assert "model Qwen/Qwen3-0.6B" in line


@pytest.mark.server
def test_embedded_simulator_is_started_once(capsys: pytest.CaptureFixture[str]) -> None:
    already_running = endpoint_module.embedded_simulator() is not None  # another test may have started it
    first = resolve_endpoint()
    second = resolve_endpoint(model="Qwen-0.6B")
    assert first.kind == second.kind == "simulator"
    assert first.base_url == second.base_url
    announced = capsys.readouterr().out.count("started the embedded Qwen3 simulator")
    assert announced == (0 if already_running else 1)
    assert "time scale 10x" in first.label  # QWEN_SIM_TIME_SCALE=10 from conftest.py
    assert first.describe().startswith("Talking to the embedded simulator (profile ")
    assert diagnose(first).ok


def test_embedded_simulator_is_served_with_the_tool_flags() -> None:
    """As the README's `vllm serve ... --enable-auto-tool-choice --tool-call-parser hermes`."""
    endpoint = resolve_endpoint()
    diagnosis = diagnose(endpoint, tools=True)
    assert diagnosis.ok, str(diagnosis)
    server = endpoint_module.embedded_simulator()
    assert server.base_url == endpoint.base_url and server.config["enable_auto_tool_choice"]
    assert [check.name for check in diagnosis.checks][-1] == "tools"


def test_a_simulator_started_by_hand_is_not_called_the_embedded_one() -> None:
    own = Endpoint("http://127.0.0.1:9/v1", kind="simulator", label="profile t4, time scale 1x")
    expected = "Talking to a simulator (profile t4, time scale 1x) at http://127.0.0.1:9/v1"
    assert own.describe() == expected + ", model Qwen/Qwen3-0.6B"


# --- the same checks against the simulator (a real HTTP server speaking vLLM's wire format) ------


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[str]:
    with serve(profile="instant", api_key=SECRET) as server:
        yield server.base_url


@pytest.mark.server
def test_simulator_with_a_key(keyed_sim: str) -> None:
    assert diagnose(keyed_sim, api_key=SECRET).ok
    assert diagnose(keyed_sim).failure.name == "auth"
    wrong = diagnose(keyed_sim, api_key="sk-wrong")
    assert "rejected the API key" in wrong.failure.message
    root = keyed_sim.removesuffix("/v1")
    missing_v1 = diagnose(root, api_key=SECRET)
    assert f"Use QWEN_BASE_URL={keyed_sim}" in missing_v1.failure.message
    https = diagnose(keyed_sim.replace("http://", "https://"), api_key=SECRET)
    assert f"Use {keyed_sim}" in https.failure.message
    model = diagnose(keyed_sim, model="Qwen3-0.6B", api_key=SECRET)
    assert "Served: Qwen/Qwen3-0.6B, Qwen-0.6B" in model.failure.message
    line = Endpoint(keyed_sim, api_key=SECRET).describe()
    assert line == f"Talking to the Qwen3 simulator (vLLM 0.32.0 wire format) at {keyed_sim}, " + (
        "model Qwen/Qwen3-0.6B"
    )


EMBEDDED_IN_A_FRESH_PROCESS = """
import httpx
import helpers.endpoint as endpoint_module
endpoint = endpoint_module.resolve_endpoint()
body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "enable_thinking": False}
assert httpx.post(endpoint.base_url + "/chat/completions", json=body).status_code == 200
endpoint_module.embedded_simulator().stop()
print("LOG_FILE", endpoint_module.embedded_simulator().log_file)
"""


@pytest.mark.server
def test_embedded_simulator_logs_to_a_temp_file_not_the_kernels_stderr() -> None:
    """Jupyter shows a kernel's stderr in whatever cell runs: the simulator must not write there."""
    env = {k: v for k, v in os.environ.items() if k not in ("QWEN_BASE_URL", "OPENAI_BASE_URL")}
    env["QWEN_SIM_PROFILE"] = "instant"
    run = subprocess.run(
        [sys.executable, "-c", EMBEDDED_IN_A_FRESH_PROCESS], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    announcement, log_line = run.stdout.strip().splitlines()
    assert "started the embedded Qwen3 simulator" in announcement
    log_file = Path(log_line.removeprefix("LOG_FILE "))
    assert str(log_file) not in announcement  # no absolute paths in notebook outputs
    assert log_file.parent == Path(tempfile.gettempdir())
    text = log_file.read_text()
    assert "Qwen3 simulator (profile instant" in text and "ignored: ['enable_thinking']" in text


# --- a URL string takes key and model from the environment, like resolve_endpoint (issue 10.2) --


def test_a_url_string_takes_the_key_and_model_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_API_KEY", SECRET)
    monkeypatch.setenv("QWEN_MODEL", "Qwen-0.6B")
    diagnosis = diagnose("http://h:8000/v1", transport=vllm_like(api_key=SECRET))
    assert diagnosis.ok, str(diagnosis)
    assert diagnosis.endpoint.model == "Qwen-0.6B"
    assert check_endpoint("http://h:8000/v1", transport=vllm_like(api_key=SECRET)).ok
    # the arguments still win over the environment
    wrong = diagnose("http://h:8000/v1", api_key="sk-wrong", transport=vllm_like(api_key=SECRET))
    assert "rejected the API key" in wrong.failure.message
    other = diagnose("http://h:8000/v1", model="Qwen3-0.6B", transport=vllm_like(api_key=SECRET))
    assert other.failure.name == "model"


def test_openai_api_key_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert diagnose("http://h:8000/v1", transport=vllm_like(api_key=SECRET)).ok


def test_a_url_without_v1_is_reported_once_as_failed() -> None:
    diagnosis = diagnose("http://gpu-pod:8000", transport=vllm_like())
    url_checks = [check for check in diagnosis.checks if check.name == "url"]
    assert len(url_checks) == 1 and not url_checks[0].ok
    assert "[OK] url" not in str(diagnosis)
    assert str(diagnosis).startswith("[FAIL] url: The URL has no /v1")


# --- one classifier for connection errors: diagnose and retry agree (issue 10.8) -----------------


def _raised_from(cause: BaseException, text: str | None = None) -> httpx.ConnectError:
    try:
        raise httpx.ConnectError(text or str(cause)) from cause
    except httpx.ConnectError as error:
        return error


CONNECT_ERRORS = [
    # (error httpx raises, connect_failure's verdict, retried by amap, diagnose says)
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "host", False, "Host not found"),
    (httpx.ConnectError("[Errno -2] Name or service not known"), "host", False, "Host not found"),
    (
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        "connect",
        True,
        "temporary failure",
    ),
    (
        httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
        "connect",
        True,
        "temporary failure",
    ),
    (ConnectionRefusedError(111, "Connection refused"), "connect", True, "Connection refused"),
    (
        httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
        "tls",
        False,
        "plain HTTP",
    ),
    (
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        "certificate",
        False,
        "certificate",
    ),
    (httpx.ConnectTimeout("timed out"), "connect", True, "No connection to"),
]


@pytest.mark.parametrize(("error", "verdict", "retried", "said"), CONNECT_ERRORS, ids=lambda v: str(v)[:40])
def test_diagnose_and_retry_classify_connection_errors_alike(
    error: BaseException, verdict: str, retried: bool, said: str
) -> None:
    raised = error if isinstance(error, httpx.TransportError) else _raised_from(error)
    assert connect_failure(raised) == verdict
    assert classify(raised).retryable is retried

    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    diagnosis = diagnose("https://gpu-pod:8000/v1", transport=httpx.MockTransport(handler))
    assert diagnosis.failure.name == "connect"
    assert said in diagnosis.failure.message, diagnosis.failure.message
    if verdict != "tls":
        assert "plain HTTP" not in diagnosis.failure.message
    if verdict != "host":
        assert "Host not found" not in diagnosis.failure.message


# --- does the server accept tools? (opt-in probe, issue 9) ---------------------------------------


def with_chat_transcript(name: str, seen: list[dict] | None = None) -> httpx.MockTransport:
    """vllm_like(), answering POST /v1/chat/completions with one transcript's status and body."""
    routes = vllm_like()
    transcript = load_transcript(name)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            if seen is not None:
                seen.append(__import__("json").loads(request.content))
            return httpx.Response(
                transcript.status, content=transcript.body, headers={"content-type": "application/json"}
            )
        return routes.handle_request(request)

    return httpx.MockTransport(handler)


def test_tools_probe_fails_on_a_server_without_the_tool_flags() -> None:
    seen: list[dict] = []
    diagnosis = diagnose(
        "http://h:8000/v1", tools=True, transport=with_chat_transcript("noflags-qwen3-tools-auto-error", seen)
    )
    assert diagnosis.failure.name == "tools"
    assert SERVE_HINT in diagnosis.failure.message
    assert "--enable-auto-tool-choice --tool-call-parser hermes" in diagnosis.failure.message
    request = seen[0]
    assert request["tool_choice"] == "auto" and request["max_tokens"] == 1 and len(request["tools"]) == 1
    assert request["model"] == DEFAULT_MODEL


def test_tools_probe_passes_on_a_server_with_the_tool_flags() -> None:
    diagnosis = diagnose(
        "http://h:8000/v1", tools=True, transport=with_chat_transcript("hermes-qwen3-tools-auto")
    )
    assert diagnosis.ok, str(diagnosis)
    assert diagnosis.checks[-1].name == "tools"


def test_tools_probe_is_opt_in() -> None:
    seen: list[dict] = []
    diagnosis = diagnose(
        "http://h:8000/v1", transport=with_chat_transcript("noflags-qwen3-tools-auto-error", seen)
    )
    assert diagnosis.ok and seen == []
    assert "tools" not in [check.name for check in diagnosis.checks]


def test_serve_hint_has_the_tool_flags() -> None:
    assert SERVE_HINT == (
        "vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3 "
        "--enable-auto-tool-choice --tool-call-parser hermes"
    )
