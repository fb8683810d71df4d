"""The HTTP side: a Starlette app speaking vLLM 0.32's OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.sim.chat_request import (
    ApiError,
    ChatRequest,
    check_limits,
    check_prompt_length,
    parse_body,
    to_chat_request,
    unknown_model,
)
from helpers.sim.config import SimConfig
from helpers.sim.engine import Engine, EngineRequest
from helpers.sim.faults import Fate, FaultInjector
from helpers.sim.guided import Constraint
from helpers.sim.kv_cache import QWEN3_06B_KV_BYTES_PER_TOKEN, KVCache
from helpers.sim.metrics import SimMetrics
from helpers.sim.profiles import get_profile
from helpers.sim.reasoning import SKIP, reasoning_tokens, stream_fields
from helpers.sim.text import EOS, THINK_START, Reply, generate_reply
from helpers.sim.tokens import count_prompt_tokens, prompt_token_ids
from helpers.sim.tool_reply import (
    ToolPlan,
    plan_shaped_reply,
    read_message,
    read_mode,
    stream_deltas,
    stream_finish_reason,
)
from helpers.sim.tool_request import ToolRequest, check_tool_flags, parse_constraint, parse_tools
from helpers.sim.wire import (
    DONE,
    SIM_VERSION,
    ChunkWriter,
    completion_body,
    error_body,
    models_body,
    new_completion_id,
    usage,
)

log = logging.getLogger("helpers.sim")

JSON_HEADERS = {"vary": "Origin"}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"vary", b"Origin"),
]
UNAUTHORIZED = b'{"error":"Unauthorized"}'
DISCONNECT_SWEEP_S = 0.25


class SimState:
    """Everything one server process shares between requests."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.profile = get_profile(config.profile)
        self.metrics = SimMetrics(config.model_name, config.public_dict())
        num_blocks = config.num_gpu_blocks()
        self.kv_cache = KVCache(num_blocks, config.block_size, config.enable_prefix_caching)
        self.metrics.set_cache_config(
            block_size=config.block_size,
            num_gpu_blocks=num_blocks,
            override=config.num_gpu_blocks_override,
            enable_prefix_caching=config.enable_prefix_caching,
            gpu_memory_utilization=config.gpu_memory_utilization,
            kv_cache_memory_bytes=(
                num_blocks * config.block_size * QWEN3_06B_KV_BYTES_PER_TOKEN
                if config.num_gpu_blocks_override is not None
                else self.profile.kv_cache_bytes(config.gpu_memory_utilization)
            ),
            max_model_len=config.max_model_len,
        )
        self.engine = Engine(
            self.profile,
            self.metrics,
            time_scale=config.time_scale,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            kv_cache=self.kv_cache,
        )
        self.faults = FaultInjector(
            fail_rate=config.fail_rate,
            rate_limit_rate=config.rate_limit_rate,
            disconnect_rate=config.disconnect_rate,
            latency_spike_rate=config.latency_spike_rate,
            latency_spike_s=config.latency_spike_s,
            tool_call_error_rate=config.tool_call_error_rate,
            seed=config.fault_seed,
        )
        self.inflight: dict[EngineRequest, object] = {}  # request -> uvicorn connection cycle
        self._logged_unknown: set[tuple[str, ...]] = set()

    def log_unknown_fields(self, fields: list[str]) -> None:
        key = tuple(fields)
        if key in self._logged_unknown:
            log.debug("The following fields were present in the request but ignored: %s", fields)
            return
        self._logged_unknown.add(key)
        log.warning(
            "The following fields were present in the request but ignored: %s "
            "(vLLM accepts and drops unknown fields too; further occurrences are logged at "
            "debug level)",
            fields,
        )

    async def sweep_disconnects(self) -> None:
        """Abort requests whose client went away (as vLLM does), also while they wait."""
        while True:
            await asyncio.sleep(DISCONNECT_SWEEP_S)
            for request, cycle in list(self.inflight.items()):
                if getattr(cycle, "disconnected", False):
                    self.engine.abort(request)
                    self.inflight.pop(request, None)
                    _wake(request)


def _wake(request: EngineRequest) -> None:
    waiter = request.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def create_app(config: SimConfig) -> OuterApp:
    """The ASGI app for `config` (engine and sweeper start with the lifespan)."""
    state = SimState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state.engine.start()
        sweeper = asyncio.get_running_loop().create_task(state.sweep_disconnects())
        try:
            yield
        finally:
            sweeper.cancel()
            await state.engine.stop()

    async def health(request: Request) -> Response:
        return Response(b"", status_code=200)

    async def version(request: Request) -> Response:
        return _json(b'{"version":"' + SIM_VERSION.encode() + b'"}')

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    async def models(request: Request) -> Response:
        return _json(models_body(config.served_model_name, config.max_model_len))

    async def chat(request: Request) -> Response:
        try:
            return await _chat(state, request)
        except ApiError as error:
            return _error(error)
        except ClientDisconnect:  # the client hung up before its body arrived: nobody to answer
            return Response(b"", status_code=499)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]
    starlette_app = Starlette(routes=routes, lifespan=lifespan)
    outer = OuterApp(starlette_app, config.api_key)
    outer.state = state
    return outer


class OuterApp:
    """Checks the API key on /v1/* (as vLLM does) and keeps the server's own `send` in the scope."""

    def __init__(self, app: Starlette, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.state: SimState | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scope.setdefault("sim.arrival", time.perf_counter())  # set by the protocol (cli.py)
            scope["sim.send"] = send
            if self.expected is not None and scope["path"].startswith("/v1"):
                auth = dict(scope["headers"]).get(b"authorization")
                if auth != self.expected:
                    await _send_plain(send, 401, UNAUTHORIZED)
                    return
        await self.app(scope, receive, send)


async def _send_plain(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _json(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers or JSON_HEADERS)


def _error(error: ApiError) -> Response:
    return _json(error.body, error.status, {**JSON_HEADERS, **error.headers})


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    body = error_body(
        f"Request body too large: {size} bytes, the limit is {limit} bytes. Send a shorter prompt.",
        "RequestEntityTooLarge",
        None,
        413,
    )
    return ApiError(413, body)


async def _chat(state: SimState, request: Request) -> Response:
    config = state.config
    body = parse_body(await _read_body(request, config.max_body_bytes))
    chat = to_chat_request(body)
    tools = parse_tools(body)
    if chat.model is not None and chat.model not in config.served_model_name:
        raise unknown_model(chat.model, config.served_model_name)
    check_limits(chat, config.max_model_len)
    check_tool_flags(
        tools,
        enable_auto_tool_choice=config.enable_auto_tool_choice,
        tool_call_parser=config.tool_call_parser,
    )
    constraint = parse_constraint(body, tools)
    if chat.unknown_fields:
        state.log_unknown_fields(chat.unknown_fields)
    prompt_tokens = count_prompt_tokens(chat.messages, chat.enable_thinking, tools and tools.tools)
    check_prompt_length(prompt_tokens, config.max_model_len)
    fate = state.faults.draw()
    if fate.error is not None:
        state.metrics.faults.labels(str(fate.error.status)).inc()
        raise fate.error
    reply, plan = _plan_reply(chat, tools, constraint, fate, prompt_tokens, config)
    if plan.malformed:
        state.metrics.faults.labels("tool_call_error").inc()
    # The frontend time runs from the request's arrival, so the simulator's own HTTP and CPU
    # time so far is part of it rather than added on top of the model.
    arrival = request.scope["sim.arrival"]
    ready_at = arrival + (state.profile.frontend_s + fate.extra_delay_s) / config.time_scale
    tokens = None
    if config.enable_prefix_caching:  # what the prefix cache hashes: the prompt, then the reply
        tokens = prompt_token_ids(chat.messages, chat.enable_thinking, tools and tools.tools)
        tokens += reply.tokens
    engine_request = EngineRequest(prompt_tokens, len(reply), chat.stream, arrival, ready_at, tokens)
    if fate.extra_delay_s:
        state.metrics.faults.labels("latency_spike").inc()
    delay = ready_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    cycle = getattr(request.scope.get("sim.send"), "__self__", None)
    state.inflight[engine_request] = cycle
    state.engine.submit(engine_request)
    completion = Completion(state, chat, reply, plan, engine_request, prompt_tokens, fate)
    if chat.stream:
        return StreamResponse(completion, cycle)
    try:
        while not (engine_request.finished or engine_request.aborted):
            await engine_request.wait()
    finally:
        state.inflight.pop(engine_request, None)
    if engine_request.aborted:
        return Response(b"", status_code=499)
    return completion.json_response()


def _plan_reply(
    chat: ChatRequest,
    tools: ToolRequest | None,
    constraint: Constraint | None,
    fate: Fate,
    prompt_tokens: int,
    config: SimConfig,
) -> tuple[Reply, ToolPlan]:
    room = config.max_model_len - prompt_tokens
    max_tokens = room if chat.max_tokens is None else min(chat.max_tokens, room)
    plan = read_mode(tools, config.tool_call_parser)
    if constraint is not None or plan.mode != "text":
        shaped = plan_shaped_reply(
            chat.messages,
            tools=tools,
            constraint=constraint,
            plan=plan,
            malformed=fate.malformed_tool_call,
            seed=chat.seed,
            temperature=chat.temperature,
            max_tokens=max_tokens,
            enable_thinking=chat.enable_thinking,
            think_tokens_mean=config.think_tokens_mean,
            answer_tokens_mean=config.answer_tokens_mean,
            reasoning_parser=config.reasoning_parser,
        )
        if shaped is not None:
            return shaped
    return _text_reply(chat, config, max_tokens), plan


def _text_reply(chat: ChatRequest, config: SimConfig, max_tokens: int) -> Reply:
    return generate_reply(
        chat.messages,
        seed=chat.seed,
        temperature=chat.temperature,
        max_tokens=max_tokens,
        min_tokens=chat.min_tokens,
        ignore_eos=chat.ignore_eos,
        stop=chat.stop,
        enable_thinking=chat.enable_thinking,
        think_tokens_mean=config.think_tokens_mean,
        answer_tokens_mean=config.answer_tokens_mean,
    )


class Completion:
    """One request's reply, rendered as a JSON body or as SSE events."""

    def __init__(
        self,
        state: SimState,
        chat: ChatRequest,
        reply: Reply,
        plan: ToolPlan,
        engine_request: EngineRequest,
        prompt_tokens: int,
        fate: Fate,
    ) -> None:
        self.state = state
        self.chat = chat
        self.reply = reply
        self.plan = plan
        self.request = engine_request
        self.prompt_tokens = prompt_tokens
        self.fate = fate
        self.id = new_completion_id()
        self.created = int(time.time())

    def usage(self, stream: bool) -> dict:
        config = self.state.config
        return usage(
            self.prompt_tokens,
            len(self.reply),
            reasoning_tokens(self.reply, config.reasoning_parser, stream),
            stream=stream,
            prompt_details=self.prompt_details() if config.enable_prompt_tokens_details else None,
        )

    def prompt_details(self) -> tuple[int, int]:
        """(cached_tokens, created_cache_tokens): prompt tokens found in the prefix cache when the
        request was first scheduled, and those of its full prompt blocks it computed and cached."""
        if not self.state.config.enable_prefix_caching:
            return 0, 0
        cached = max(self.request.num_cached, 0)
        block_size = self.state.config.block_size
        return cached, max(self.prompt_tokens // block_size * block_size - cached, 0)

    def json_response(self) -> Response:
        config = self.state.config
        message = read_message(self.reply, self.plan, config.reasoning_parser)
        body = completion_body(
            completion_id=self.id,
            created=self.created,
            model=config.model_name,
            reasoning_field=config.reasoning_field,
            reasoning=message.reasoning,
            content=message.content,
            finish_reason=message.finish_reason,
            stop_reason=self.reply.stop_reason,
            usage_body=self.usage(stream=False),
            tool_calls=message.tool_calls,
        )
        self.state.metrics.success[self.reply.finish_reason].inc()
        if self.fate.disconnect_after is not None:
            self.state.metrics.faults.labels("disconnect").inc()
            return CutResponse(body, self.fate.disconnect_after)
        return _json(body)


class CutResponse(Response):
    """A JSON response whose connection is closed part-way through the body (injected fault)."""

    def __init__(self, body: bytes, fraction: float) -> None:
        super().__init__(body, media_type="application/json", headers=JSON_HEADERS)
        self.fraction = fraction

    async def __call__(self, scope, receive, send) -> None:
        raw_send = scope.get("sim.send", send)
        await raw_send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await raw_send(
            {
                "type": "http.response.body",
                "body": self.body[: int(len(self.body) * self.fraction)],
                "more_body": True,
            }
        )
        await _close_connection(raw_send)


async def _close_connection(raw_send) -> None:
    """Close the TCP connection now, without ending the HTTP response."""
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("simulated disconnect")
    transport.close()
    for _ in range(20):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)


class StreamResponse(Response):
    """Server-sent events, one per token, written straight to the server's `send`."""

    def __init__(self, completion: Completion, cycle: object) -> None:
        super().__init__(media_type="text/event-stream")
        self.completion = completion
        self.cycle = cycle
        self.deltas: list[list[dict]] | None = None  # per token, when a tool parser reads the reply
        self.finish_reason = completion.reply.finish_reason
        config = completion.state.config
        if completion.plan.mode != "text":
            self.deltas = stream_deltas(
                completion.reply, completion.plan, config.reasoning_parser, config.reasoning_field
            )
            self.finish_reason = stream_finish_reason(completion.reply, completion.plan, self.deltas)

    def _tool_events(self, writer: ChunkWriter, start: int, end: int, total: int) -> list[bytes]:
        """One chunk per delta; tokens that send nothing send no chunk, except the last token,
        whose chunk (its last delta, or `{}`) carries `finish_reason`."""
        events = []
        for index in range(start, end):
            deltas = self.deltas[index]
            if index < total - 1:
                events.extend(writer.delta(delta) for delta in deltas)
                continue
            events.extend(writer.delta(delta) for delta in deltas[:-1])
            events.append(
                writer.last_token(
                    deltas[-1] if deltas else {},
                    self.finish_reason,
                    self.completion.reply.stop_reason,
                    fingerprint=not self.completion.chat.include_usage,
                )
            )
        return events

    async def __call__(self, scope, receive, send) -> None:
        completion, cycle = self.completion, self.cycle
        state, reply, request = completion.state, completion.reply, completion.request
        config = state.config
        raw_send = scope.get("sim.send", send)
        writer = ChunkWriter(completion.id, completion.created, config.model_name)
        fields = stream_fields(reply, config.reasoning_parser, config.reasoning_field)
        total = len(reply)
        cut_at = None
        if completion.fate.disconnect_after is not None:
            cut_at = max(1, int(total * completion.fate.disconnect_after))
        coalesce = config.coalesce
        sent = 0
        try:
            await raw_send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while True:
                while request.generated == sent and not request.finished and not request.aborted:
                    await request.wait()
                if request.aborted or getattr(cycle, "disconnected", False):
                    state.engine.abort(request)
                    return
                ready = request.generated
                if ready - sent < coalesce and not request.finished and sent > 0:
                    await request.wait()
                    continue
                parts = [writer.role()] if sent == 0 else []
                parts.extend(self._token_events(writer, fields, sent, ready, total))
                sent = ready
                if cut_at is not None and sent >= cut_at and not request.finished:
                    state.metrics.faults.labels("disconnect").inc()
                    await raw_send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                    state.engine.abort(request)
                    await _close_connection(raw_send)
                    return
                if request.finished:
                    if completion.chat.include_usage:
                        parts.append(writer.usage(completion.usage(stream=True)))
                    parts.append(DONE)
                    state.metrics.success[reply.finish_reason].inc()
                    await raw_send(
                        {"type": "http.response.body", "body": b"".join(parts), "more_body": False}
                    )
                    return
                await raw_send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
        finally:
            state.inflight.pop(request, None)

    def _token_events(
        self, writer: ChunkWriter, fields: list, start: int, end: int, total: int
    ) -> list[bytes]:
        if self.deltas is not None:
            return self._tool_events(writer, start, end, total)
        reply = self.completion.reply
        config = self.completion.state.config
        tokens, coalesce = reply.tokens, config.coalesce
        events = []
        index = start
        while index < end:
            field = fields[index]
            if index == total - 1:
                kind = reply.kinds[index]
                if kind == EOS:
                    delta = {}
                elif field is SKIP:
                    delta = {config.reasoning_field if kind == THINK_START else "content": ""}
                else:
                    delta = {field: tokens[index]}
                events.append(
                    writer.last_token(
                        delta,
                        reply.finish_reason,
                        reply.stop_reason,
                        fingerprint=not self.completion.chat.include_usage,
                    )
                )
                index += 1
                continue
            if field is SKIP:
                index += 1
                continue
            if coalesce == 1:
                events.append(writer.token(field, tokens[index]))
                index += 1
                continue
            stop = min(end, index + coalesce, total - 1)
            group = index
            while group < stop and fields[group] == field:
                group += 1
            events.append(writer.token(field, "".join(tokens[index:group])))
            index = group
        return events
