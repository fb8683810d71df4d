"""All simulator settings in one dataclass, shared by serve(), the CLI and the app."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from helpers.sim.hermes import TOOL_PARSERS
from helpers.sim.profiles import get_profile
from helpers.sim.reasoning import normalise_parser

DEFAULT_MODEL_NAMES = ("Qwen/Qwen3-0.6B", "Qwen-0.6B")
REASONING_FIELDS = ("reasoning", "reasoning_content")


@dataclass
class SimConfig:
    """Settings of one simulator process. Each option is documented here, once, in the docstring under
    its field: ``serve()``'s keywords, the CLI's flags and docs/simulator.md's options table are made
    from these (``helpers.sim.options``); a new field with its docstring is all a new option takes."""

    profile: str = "l4"
    """Latency profile: `t4`, `l4`, `a100`, `h100`, `cpu` (vLLM's CPU build on 2 vCPUs, measured:
    docs/vllm_cpu.md), `instant` (step-time models in docs/simulator.md)."""
    time_scale: float = 1.0
    """Run the clock this many times faster than the profile (ratios unchanged)."""
    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = 8000
    """Port to bind; 0 takes a free one (`serve()` defaults to 0, see `server.port`)."""
    reasoning_parser: str = "qwen3"
    """As vLLM's `--reasoning-parser`: `qwen3`, `deepseek_r1`, or `none` (`<think>...</think>` stays in
    `content`)."""
    reasoning_field: str = "reasoning"
    """Field the reasoning goes in: `reasoning` (vLLM >= 0.16) or `reasoning_content` (older vLLM, SGLang,
    DeepSeek)."""
    served_model_name: list[str] = field(default_factory=lambda: list(DEFAULT_MODEL_NAMES))
    """Model names accepted; the first is returned in every response's `model`."""
    api_key: str | None = None
    """Require `Authorization: Bearer KEY` on `/v1/*` (401 otherwise); the CLI defaults to `$VLLM_API_KEY`,
    as vLLM."""
    max_num_seqs: int | None = None
    """Most sequences running at once (default: the profile's, as vLLM's)."""
    max_num_batched_tokens: int | None = None
    """Token budget per engine step (default: the profile's, as vLLM's)."""
    max_model_len: int = 40960
    """Context length in tokens (Qwen3-0.6B's)."""
    think_tokens_mean: int = 256
    """Mean length of the thinking part, in tokens; each prompt varies around it (log-normal)."""
    answer_tokens_mean: int = 128
    """Mean length of the answer, in tokens; each prompt varies around it (log-normal)."""
    fail_rate: float = 0.0
    """Injected fault: share of requests answered 500 or 503 (vLLM-shaped body)."""
    rate_limit_rate: float = 0.0
    """Injected fault: share of requests answered 429 with `Retry-After: 1`."""
    disconnect_rate: float = 0.0
    """Injected fault: share of responses whose connection is closed mid-way (no `[DONE]`)."""
    latency_spike_rate: float = 0.0
    """Injected fault: share of requests delayed by `latency_spike_s`."""
    latency_spike_s: float = 2.0
    """Length of a latency spike, in model seconds."""
    fault_seed: int = 0
    """Seed of the fault draws (made per request, in arrival order)."""
    coalesce: int = 1
    """Tokens per streamed chunk (vLLM sends one per token)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies get 413."""
    enable_auto_tool_choice: bool = False
    """As vLLM's `--enable-auto-tool-choice`: lets the model decide to call tools (`tool_choice`
    "auto", also what an absent `tool_choice` means when `tools` are sent). Needs
    `tool_call_parser`. Off, "auto" gets vLLM's 400."""
    tool_call_parser: str | None = None
    """As vLLM's `--tool-call-parser`; only "hermes" (Qwen3's format). Needed for `tool_choice`
    "required" and named (400 without it, as vLLM); the parser turns `<tool_call>` text into
    `tool_calls`."""
    tool_call_error_rate: float = 0.0
    """Injected fault: share of replies with planned tool calls (auto/required) in which the model
    writes a malformed `<tool_call>` the parser gives up on, so the raw text lands in `content`."""
    block_size: int = 16
    """As vLLM's `--block-size`: tokens per KV cache block, the unit of prefix-cache hits (vLLM's
    GPU builds use 16, its CPU build 128)."""
    gpu_memory_utilization: float = 0.9
    """As vLLM's `--gpu-memory-utilization`: share of the profile's GPU memory vLLM may use; the KV
    cache gets what the weights and the profiled overhead leave (profiles.py shows each GPU's)."""
    num_gpu_blocks_override: int | None = None
    """As vLLM's `--num-gpu-blocks-override`: the KV cache's size in blocks, instead of the
    profile's memory (a small one shows preemption; block 0 is reserved, as in vLLM)."""
    enable_prefix_caching: bool = True
    """As vLLM's `--enable-prefix-caching` (on by default; `--no-enable-prefix-caching`): full KV
    blocks of earlier prompts are reused, so a shared prefix skips its prefill."""
    enable_prompt_tokens_details: bool = False
    """As vLLM's `--enable-prompt-tokens-details`: `usage.prompt_tokens_details` carries
    `cached_tokens` (prompt tokens found in the prefix cache) and `created_cache_tokens`."""

    def __post_init__(self) -> None:
        get_profile(self.profile)
        self.reasoning_parser = normalise_parser(self.reasoning_parser)
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        if isinstance(self.served_model_name, str):
            self.served_model_name = [self.served_model_name]
        if not self.served_model_name:
            self.served_model_name = list(DEFAULT_MODEL_NAMES)
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive (2.0 runs twice as fast as the model)")
        if self.coalesce < 1:
            raise ValueError("coalesce must be at least 1 token per chunk")
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError(
                "--enable-auto-tool-choice requires --tool-call-parser (as vLLM): "
                "add tool_call_parser='hermes'"
            )
        if self.tool_call_parser is not None and self.tool_call_parser not in TOOL_PARSERS:
            raise ValueError(
                f"tool_call_parser must be one of {TOOL_PARSERS} (Qwen3 writes Hermes-style calls)"
            )
        for name in (
            "fail_rate",
            "rate_limit_rate",
            "disconnect_rate",
            "latency_spike_rate",
            "tool_call_error_rate",
        ):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.fail_rate + self.rate_limit_rate + self.disconnect_rate > 1.0:
            raise ValueError("fail_rate + rate_limit_rate + disconnect_rate must not exceed 1")
        if self.max_model_len < 16:
            raise ValueError("max_model_len must be at least 16")
        if self.block_size < 1:
            raise ValueError("block_size must be at least 1 (vLLM's GPU default is 16)")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1] (vLLM's default is 0.9)")
        if self.num_gpu_blocks_override is not None and self.num_gpu_blocks_override < 2:
            raise ValueError("num_gpu_blocks_override must be at least 2 (block 0 is reserved)")
        capacity = (self.num_gpu_blocks() - 1) * self.block_size
        if self.max_model_len > capacity:
            raise ValueError(
                f"max_model_len {self.max_model_len} is larger than the KV cache holds ({capacity} "
                f"tokens): lower max_model_len or give the cache more blocks (as vLLM refuses to start)"
            )

    def num_gpu_blocks(self) -> int:
        """KV cache blocks: `num_gpu_blocks_override`, else what the profile's memory holds."""
        if self.num_gpu_blocks_override is not None:
            return self.num_gpu_blocks_override
        return get_profile(self.profile).num_gpu_blocks(self.block_size, self.gpu_memory_utilization)

    @property
    def model_name(self) -> str:
        """The canonical name, returned in every response's `model`."""
        return self.served_model_name[0]

    def as_dict(self) -> dict:
        return asdict(self)

    def public_dict(self) -> dict:
        """The settings safe to show (``/metrics``, reprs): the API key is only said to be set."""
        return {**asdict(self), "api_key": "set" if self.api_key else None}

    def to_args(self) -> list[str]:
        """Command-line arguments that reproduce these settings."""
        args: list[str] = []
        for name, value in asdict(self).items():
            if value is None or name == "api_key":  # the key goes by environment, not on `ps`
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                default = self.__dataclass_fields__[name].default
                args += [flag] if value else (["--no-" + flag[2:]] if default else [])
            elif name == "served_model_name":
                args += [flag, *value]
            else:
                args += [flag, str(value)]
        return args
