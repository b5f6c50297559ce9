"""Build the tiny, *scripted* Qwen3 model that the real-vLLM CPU test tier serves.

Run inside ``.venv-vllm`` (torch, tokenizers, transformers, safetensors, tiktoken), normally through
``bash tests/servers/vllm_cpu.sh model``::

    python build_tiny_qwen3.py --dashscope-wheel dashscope-2.0.2-py3-none-any.whl \
        --template .cache/trl/qwen3.jinja --out .cache/tiny-qwen3

Output: tokenizer.json, tokenizer_config.json (with the chat template), chat_template.jinja,
config.json, generation_config.json, model.safetensors, SCRIPT.json (the chain and bias table, for
humans and tests).

Chat template: Qwen3-0.6B's official one, which ``vllm_cpu.sh model`` takes from the pinned trl wheel
(``qwen3_template.py``, sha256-checked), so the tier's server renders prompts exactly as a real Qwen3
deployment does.

Tokenizer: the real Qwen BPE. Its 151,643 ranks ship in the PyPI package ``dashscope``
(``qwen.tiktoken``); they become a byte-level BPE ``tokenizer.json`` (rank = id; merges derived from
the ranks), with Qwen3's 26 added tokens at ids 151643..151668.

Model: Qwen3ForCausalLM, 2 layers, hidden 128, 4 heads / 2 KV heads, head_dim 32, vocab 151936.
Every attention output projection (o_proj) and MLP down projection is ZERO, so the residual stream
at the last layer equals the embedding of the *current* token and the next-token logits are
``lm_head @ rmsnorm(embed[current])``: a fixed table, the same at any position and for any history.

Embedding of token t: ``e[dim(t)] = 1`` and ``e[BIAS] = 1`` (dim(t) is a per-state dimension for the
tokens in transitions() and a shared DEFAULT dimension for all others). After RMSNorm both entries
are sqrt(128/2) = 8. LM head: ``W[next(t), dim(t)] = CHAIN / 8`` and ``W[y, BIAS] = bias(y) / 8``.
So the logit of y after t is ``CHAIN * [y == next(t)] + bias(y)``:
- the scripted next token wins by >= 55 logits (CHAIN 240 - max bias 165 - whitespace penalty 20),
  so greedy and temperature sampling follow the chain;
- when a grammar (json_schema, tool calls) forbids next(t), the bias table (levels 15 logits apart)
  decides: quote > } > ] > , > : > { > [ > 3 > true > other digits > false > null > letters >
  <tool_call> and </tool_call> > every other token, minus 15 per character beyond the first and 20
  per whitespace character. Strings close (as "Hello!" when opened after a key), objects and arrays
  close as soon as the schema allows, integers are 3, forced text (keys, the tool-call envelope) is
  spelt with the shortest pieces and no extra whitespace: constrained output is valid, compact and
  short.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import zipfile

# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
# Pre-tokenizer regex of Qwen (PAT_STR in dashscope/tokenizers/qwen_tokenizer.py; the same as in the
# official Qwen2/Qwen3 tokenizer.json).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_RANKS = 151643
VOCAB_SIZE = 151936  # Qwen3's embedding rows (padded beyond the tokenizer's 151669 ids)

# Qwen3 added tokens, in id order from 151643. The bool is Qwen3's "special" flag: tool/think/fim
# tokens are NOT special, so they survive skip_special_tokens and reach the reasoning and tool-call
# parsers.
ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
ADDED_IDS = {content: N_RANKS + i for i, (content, _) in enumerate(ADDED_TOKENS)}
assert ADDED_IDS["<|im_end|>"] == 151645 and ADDED_IDS["<tool_call>"] == 151657
assert ADDED_IDS["<tool_response>"] == 151665 and ADDED_IDS["</think>"] == 151668


def read_ranks(wheel: str) -> dict[bytes, int]:
    """qwen.tiktoken from the dashscope wheel: one 'base64(token) rank' per line."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith("/qwen.tiktoken")]
        if not names:
            raise SystemExit(f"no qwen.tiktoken inside {wheel}")
        raw = zf.read(sorted(names)[0])
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line.strip():
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64)] = int(rank)
    if len(ranks) != N_RANKS or sorted(ranks.values()) != list(range(N_RANKS)):
        raise SystemExit(f"unexpected qwen.tiktoken: {len(ranks)} ranks")
    return ranks


def byte_alphabet() -> list[str]:
    """GPT-2 byte-level alphabet: byte value -> printable unicode character."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def ranks_to_vocab_and_merges(
    ranks: dict[bytes, int],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab (id = rank) and a merge list that makes HF's BPE reproduce tiktoken.

    tiktoken repeatedly merges the adjacent pair whose concatenation has the lowest rank. For HF's
    BPE the same happens when every split (left, right) of a token into two tokens is a merge whose
    priority is the rank of the merged token (ties between splits of one token: by the halves'
    ranks).
    """
    alphabet = byte_alphabet()

    def show(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {show(tok): rank for tok, rank in ranks.items()}
    keyed: list[tuple[int, int, int, str, str]] = []
    for tok, rank in ranks.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None:
                keyed.append((rank, lr, rr, show(left), show(right)))
    keyed.sort()
    return vocab, [(left, right) for _, _, _, left, right in keyed]


def build_tokenizer(ranks: dict[bytes, int], out: str) -> None:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import BPE

    vocab, merges = ranks_to_vocab_and_merges(ranks)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    for content, special in ADDED_TOKENS:
        added = AddedToken(
            content,
            single_word=False,
            lstrip=False,
            rstrip=False,
            normalized=False,
            special=special,
        )
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
        got = tok.token_to_id(content)
        if got != ADDED_IDS[content]:
            raise SystemExit(f"{content} got id {got}, want {ADDED_IDS[content]}")
    tok.save(os.path.join(out, "tokenizer.json"))


def write_tokenizer_config(out: str, template: str) -> None:
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ADDED_IDS[c]): {
                "content": c,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for c, special in ADDED_TOKENS
        },
        "additional_special_tokens": [c for c, special in ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    dump_json(os.path.join(out, "tokenizer_config.json"), config)


# --------------------------------------------------------------------------------------------------
# The script (the next-token table)
# --------------------------------------------------------------------------------------------------
HIDDEN = 128
CHAIN = 240.0  # logit bonus of the scripted next token (beats the largest bias, 165, by 75)
WHITESPACE_BIAS = -20.0  # per whitespace character of a token (JSON stays compact)
LENGTH_BIAS = (
    -15.0
)  # per character beyond the first, for tokens outside BIAS_LEVELS (see bias_table)
MIN_BIAS = -300.0
TOOL_TAG_BIAS = 5.0  # <tool_call> / </tool_call> as single tokens, as the hermes parser expects
PAD_BIAS = -1000.0  # ids past the tokenizer (151669..151935): never produced

# Single-token strings (checked against the tokenizer at build time).
T = {
    "\n": 198,
    "\n\n": 271,
    "Hello": 9707,
    "!": 0,
    "Hmm": 80022,
    '"': 1,
    '":': 788,
    ":": 25,
    "{": 90,
    "}": 92,
}


def transitions() -> dict[int, int]:
    """current token -> scripted next token. Any other token -> <|im_end|> (EOS)."""
    think, end_think, im_end = ADDED_IDS["<think>"], ADDED_IDS["</think>"], ADDED_IDS["<|im_end|>"]
    return {
        # Thinking on: the prompt ends "<|im_start|>assistant\n"
        T["\n"]: think,
        think: T["Hmm"],
        T["Hmm"]: end_think,
        end_think: T["\n\n"],
        # Thinking off: the prompt ends "<think>\n\n</think>\n\n"
        T["\n\n"]: T["Hello"],
        T["Hello"]: T["!"],
        T["!"]: im_end,
        # Inside JSON (only reachable where a grammar forbids the tokens above):
        T["{"]: T["}"],  # an object closes at once when it may (json_object -> {})
        T[":"]: T['"'],  # a value is a string when it may be one ...
        T['":']: T['"'],
        T['"']: T["Hello"],  # ... and an opened string reads "Hello!" (then `"` closes it)
    }


# Bias levels, 15 logits apart so that sampling at the usual temperatures (<= 1) still takes the
# best token the grammar allows. Inside a string the quote wins (so strings close), outside it
# closers beat separators beat openers (so objects and arrays close as soon as the schema allows).
BIAS_LEVELS: list[tuple[float, list[str]]] = [
    (165.0, ['"']),
    (150.0, ["}"]),
    (135.0, ["]"]),
    (120.0, [","]),
    (105.0, [":"]),
    (90.0, ["{"]),
    (75.0, ["["]),
    (60.0, ["3"]),  # integers come out as 3 (langchain-tests ask for magic_function(3))
    (50.0, ["true"]),
    (40.0, [str(d) for d in range(10) if d != 3]),
    (30.0, ["false"]),
    (20.0, ["null"]),
    (
        10.0,
        [chr(c) for c in range(ord("a"), ord("z") + 1)]
        + [chr(c) for c in range(ord("A"), ord("Z") + 1)],
    ),
]


def bias_table(decoded: dict[int, str]) -> dict[int, float]:
    """Per-token logit bias (shared by all states): decides wherever a grammar forbids the chain.

    Tokens outside BIAS_LEVELS are ranked too, so that two tokens a grammar allows rarely tie (a tie
    is a coin flip at temperature > 0): -15 per character beyond the first and -20 per whitespace
    character. Where the grammar forces a text (a key, the tool-call envelope) the shortest pieces
    win, so the model never pads with whitespace ('{\r\n') and never runs into the next piece ('><'
    after '</tool_call'). The scripted next tokens (transitions()) only get the flat whitespace
    penalty.
    """
    by_text = {text: i for i, text in decoded.items()}
    bias: dict[int, float] = {}
    for value, texts in BIAS_LEVELS:
        for text in texts:
            if text not in by_text:
                raise SystemExit(f"bias token {text!r} is not a single token")
            bias[by_text[text]] = value
    chain_targets = set(transitions().values())
    for i, text in decoded.items():
        if i in bias:
            continue
        spaces = sum(ch.isspace() for ch in text)
        if i in chain_targets:
            value = WHITESPACE_BIAS if spaces else 0.0
        else:
            value = max(MIN_BIAS, LENGTH_BIAS * (len(text) - 1) + WHITESPACE_BIAS * spaces)
        if value:
            bias[i] = value
    bias[ADDED_IDS["<tool_call>"]] = bias[ADDED_IDS["</tool_call>"]] = TOOL_TAG_BIAS
    return bias


def build_weights(decoded: dict[int, str], n_tokens: int):  # -> dict[str, torch.Tensor]
    import torch

    trans = transitions()
    bias = bias_table(decoded)
    im_end = ADDED_IDS["<|im_end|>"]
    bias_dim, default_dim = 0, 1
    state_dim = {tok: 2 + k for k, tok in enumerate(sorted(trans))}
    assert 2 + len(state_dim) <= HIDDEN

    scale = (HIDDEN / 2) ** 0.5  # RMSNorm of a vector with two entries equal to 1
    embed = torch.zeros(VOCAB_SIZE, HIDDEN)
    embed[:, bias_dim] = 1.0
    embed[:, default_dim] = 1.0
    for tok, dim in state_dim.items():
        embed[tok, default_dim] = 0.0
        embed[tok, dim] = 1.0

    head = torch.zeros(VOCAB_SIZE, HIDDEN)
    for tok, value in bias.items():
        head[tok, bias_dim] = value / scale
    head[n_tokens:, bias_dim] = PAD_BIAS / scale
    head[im_end, default_dim] = CHAIN / scale
    for tok, nxt in trans.items():
        head[nxt, state_dim[tok]] = CHAIN / scale

    cfg = model_config()
    n_layers, n_heads, n_kv = (
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
    )
    head_dim, inter = cfg["head_dim"], cfg["intermediate_size"]
    bf16 = torch.bfloat16
    gen = torch.Generator().manual_seed(0)

    def small(*shape: int):
        # q/k/v/gate/up get small random values (real-looking compute); their outputs are multiplied
        # by the zero o_proj / down_proj, so they cannot change the script.
        return (torch.randn(*shape, generator=gen) * 0.02).to(bf16)

    w = {
        "model.embed_tokens.weight": embed.to(bf16),
        "lm_head.weight": head.to(bf16),
        "model.norm.weight": torch.ones(HIDDEN, dtype=bf16),
    }
    for layer in range(n_layers):
        p = f"model.layers.{layer}."
        w |= {
            p + "input_layernorm.weight": torch.ones(HIDDEN, dtype=bf16),
            p + "post_attention_layernorm.weight": torch.ones(HIDDEN, dtype=bf16),
            p + "self_attn.q_proj.weight": small(n_heads * head_dim, HIDDEN),
            p + "self_attn.k_proj.weight": small(n_kv * head_dim, HIDDEN),
            p + "self_attn.v_proj.weight": small(n_kv * head_dim, HIDDEN),
            p + "self_attn.q_norm.weight": torch.ones(head_dim, dtype=bf16),
            p + "self_attn.k_norm.weight": torch.ones(head_dim, dtype=bf16),
            p + "self_attn.o_proj.weight": torch.zeros(HIDDEN, n_heads * head_dim, dtype=bf16),
            p + "mlp.gate_proj.weight": small(inter, HIDDEN),
            p + "mlp.up_proj.weight": small(inter, HIDDEN),
            p + "mlp.down_proj.weight": torch.zeros(HIDDEN, inter, dtype=bf16),
        }
    return w, trans, bias


def model_config() -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 32,  # vLLM's CPU attention rejects 16
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "max_position_embeddings": 40960,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
        # As in Qwen3-0.6B's config. Without it transformers 5 suspects a Mistral tokenizer and
        # warns.
        "transformers_version": "4.51.0",
    }


def generation_config() -> dict:
    # Qwen3-0.6B's own defaults (vLLM applies them to requests that leave these unset).
    return {
        "bos_token_id": 151643,
        "do_sample": True,
        "eos_token_id": [151645, 151643],
        "pad_token_id": 151643,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0",
    }


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------
ROUND_TRIP_TEXTS = [
    "Hello, world! How are you doing today?  Multiple   spaces\tand tabs\n\nnew lines.\n",
    "What's the capital of France? I'll say: Paris (it's 2,140,526 people).",
    "请用三句话解释一下量子计算是什么。北京和上海哪个城市的人口更多？",  # noqa: RUF001
    "Mixed 中英文 text, numbers 12345, emojis 🤖🚀, code: def f(x):\n    return x**2\r\n",
    "naïve café résumé — “quotes” ‘single’ … Ünïcödé",  # noqa: RUF001
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "<tool_call>\n{}\n</tool_call><tool_response>x</tool_response>   \n\n\n end",
]


def check_tokenizer(ranks: dict[bytes, int], out: str) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(out)
    assert len(hf) == N_RANKS + len(ADDED_TOKENS), len(hf)
    assert hf.eos_token_id == 151645 and hf.pad_token_id == 151643
    for text, want in [
        ("\n", [198]),
        ("\n\n", [271]),
        ("Hello!", [9707, 0]),
        ("Hmm", [80022]),
        ("<think>\n\n</think>\n\n", [151667, 271, 151668, 271]),
    ]:
        got = hf.encode(text, add_special_tokens=False)
        if got != want:
            raise SystemExit(f"tokenizer: {text!r} -> {got}, want {want}")
    try:
        import tiktoken
    except ImportError:
        print("  (tiktoken missing: round trips checked by decode only)")
        tiktoken = None
    enc = None
    if tiktoken is not None:
        enc = tiktoken.Encoding(
            "qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=dict(ADDED_IDS)
        )
    for text in ROUND_TRIP_TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        if hf.decode(ids) != text:
            raise SystemExit(f"tokenizer: decode(encode({text!r})) = {hf.decode(ids)!r}")
        if enc is not None:
            ref = enc.encode(text, allowed_special="all")
            if ref != ids:
                raise SystemExit(f"tokenizer != tiktoken for {text!r}:\n  hf {ids}\n  tt {ref}")
    print(
        f"  tokenizer OK: {len(hf)} ids, {len(ROUND_TRIP_TEXTS)} round trips"
        f"{' equal to tiktoken' if enc is not None else ''}"
    )


def check_template(out: str) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(out)
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nold\n</think>\n\nHey"},
        {"role": "user", "content": "Again"},
    ]
    plain = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHey<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    cases = [
        ({}, plain),
        ({"enable_thinking": True}, plain),
        ({"enable_thinking": False}, plain + "<think>\n\n</think>\n\n"),
    ]
    for kwargs, want in cases:
        got = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, **kwargs)
        if got != want:
            raise SystemExit(f"template {kwargs}: got {got!r}\nwant {want!r}")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    loop = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Use the tool.",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "sunny"},
    ]
    got = hf.apply_chat_template(loop, tools=tools, tokenize=False, add_generation_prompt=True)
    want = (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user "
        "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
        "<tools>\n"
        + json.dumps(tools[0], ensure_ascii=False)
        + "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, '
        '"arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nUse the tool.\n</think>\n\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    if got != want:
        raise SystemExit(f"template (tools): got {got!r}\nwant {want!r}")
    # ReAct: tool results sent back as user text. Reasoning after the last real query is kept, earlier
    # reasoning is dropped (what render_chatml reproduces for the completions wire).
    react = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nold\n</think>\n\nHey"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "<think>\nUse the tool.\n</think>\n\nAction: weather[Paris]"},
        {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"},
    ]
    got = hf.apply_chat_template(react, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    want = (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nUse the tool.\n</think>\n\nAction: weather[Paris]<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    if got != want:
        raise SystemExit(f"template (ReAct): got {got!r}\nwant {want!r}")
    print("  chat template OK (plain turns, thinking switch, tools, tool loop, ReAct reasoning)")


def check_model(out: str, trans: dict[int, int], bias: dict[int, float]) -> dict[str, list[int]]:
    """Greedy generation with transformers' own Qwen3 implementation, plus the logit margins."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    im_end = ADDED_IDS["<|im_end|>"]
    chains: dict[str, list[int]] = {}
    for name, kwargs, want in [
        ("thinking_off", {"enable_thinking": False}, "Hello!"),
        ("thinking_on", {"enable_thinking": True}, "<think>Hmm</think>\n\nHello!"),
    ]:
        ids = tok.apply_chat_template(
            msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True, **kwargs
        )["input_ids"]
        with torch.no_grad():
            gen = model.generate(
                ids, max_new_tokens=16, do_sample=False, eos_token_id=[im_end], pad_token_id=151643
            )
        new = gen[0, ids.shape[1] :].tolist()
        text = tok.decode(new, skip_special_tokens=True)
        if text != want or new[-1] != im_end:
            raise SystemExit(
                f"model ({name}): generated {new} = {text!r}, want {want!r} + <|im_end|>"
            )
        chains[name] = [ids[0, -1].item(), *new]
    # Margins: scripted next token vs the best other token, for every state and for a default token.
    states = [*trans, 151644, 9707 + 1]
    with torch.no_grad():
        logits = model(torch.tensor([states])).logits[0].float()
    worst = min(
        (
            row[trans.get(s, im_end)]
            - row.clone().index_fill_(0, torch.tensor([trans.get(s, im_end)]), float("-inf")).max()
        ).item()
        for s, row in zip(states, logits, strict=True)
    )
    if worst < 30:
        raise SystemExit(f"model: scripted margin only {worst:.1f} logits")
    print(
        f"  model OK: thinking off {chains['thinking_off']}, thinking on {chains['thinking_on']}, "
        f"min margin {worst:.1f} logits"
    )
    return chains


# --------------------------------------------------------------------------------------------------
def dump_json(path: str, obj: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dashscope-wheel", required=True, help="dashscope-*.whl holding qwen.tiktoken"
    )
    ap.add_argument(
        "--template", required=True, help="the chat template (Qwen3's official one: see qwen3_template.py)"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--no-check", action="store_true", help="skip the tokenizer/template/model checks"
    )
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    with open(args.template, encoding="utf-8") as f:
        template = f.read()

    ranks = read_ranks(args.dashscope_wheel)
    print(f"  {len(ranks)} BPE ranks from {os.path.basename(args.dashscope_wheel)}")
    build_tokenizer(ranks, args.out)
    write_tokenizer_config(args.out, template)
    shutil.copyfile(args.template, os.path.join(args.out, "chat_template.jinja"))
    dump_json(os.path.join(args.out, "config.json"), model_config())
    dump_json(os.path.join(args.out, "generation_config.json"), generation_config())

    decoded = {rank: tok.decode("utf-8", errors="replace") for tok, rank in ranks.items()}
    for text, tid in T.items():
        if decoded.get(tid) != text:
            raise SystemExit(f"token {tid} is {decoded.get(tid)!r}, expected {text!r}")
    n_tokens = N_RANKS + len(ADDED_TOKENS)
    weights, trans, bias = build_weights(decoded, n_tokens)
    save_file(weights, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})

    names = {
        **{i: decoded[i] for i in list(trans) + list(trans.values()) if i in decoded},
        **{v: k for k, v in ADDED_IDS.items()},
    }
    script = {
        "transitions": [
            {"from": a, "from_text": names.get(a), "to": b, "to_text": names.get(b)}
            for a, b in trans.items()
        ],
        "default_next": {"id": ADDED_IDS["<|im_end|>"], "text": "<|im_end|>"},
        "chain_bonus": CHAIN,
        "bias": {
            str(i): {"text": names.get(i, decoded.get(i)), "bias": v}
            for i, v in sorted(bias.items())
            if v > 0
        },
        "negative_bias": {
            "tokens": sum(1 for v in bias.values() if v < 0),
            "per_whitespace_char": WHITESPACE_BIAS,
            "per_extra_char": LENGTH_BIAS,
            "floor": MIN_BIAS,
            "padding_ids": [n_tokens, VOCAB_SIZE - 1],
            "padding_value": PAD_BIAS,
        },
    }
    if not args.no_check:
        check_tokenizer(ranks, args.out)
        check_template(args.out)
        script["checked_chains"] = check_model(args.out, trans, bias)
    dump_json(os.path.join(args.out, "SCRIPT.json"), script)
    with open(os.path.join(args.out, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"  wrote {args.out} (model.safetensors sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
