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
    """Settings of one simulator process (see docs/simulator.md for each option)."""

    profile: str = "l4"
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000
    reasoning_parser: str = "qwen3"
    reasoning_field: str = "reasoning"
    served_model_name: list[str] = field(default_factory=lambda: list(DEFAULT_MODEL_NAMES))
    api_key: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int = 40960
    think_tokens_mean: int = 256
    answer_tokens_mean: int = 128
    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    disconnect_rate: float = 0.0
    latency_spike_rate: float = 0.0
    latency_spike_s: float = 2.0
    fault_seed: int = 0
    coalesce: int = 1
    max_body_bytes: int = 8 * 1024 * 1024
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
