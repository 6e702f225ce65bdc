"""Write a tiny, hand-wired Qwen3-architecture GGUF whose greedy output is fixed per situation.

No weights can be downloaded here, so the test model is built rather than trained. It carries a real
tokenizer (the Qwen2 BPE vocabulary shipped in llama.cpp's `models/ggml-vocab-qwen2.gguf`, with
Qwen3's added tokens `<tool_call>`, `<think>`, ... put at their Qwen3 ids) and Qwen3's own chat template
(llama.cpp's `models/templates/Qwen-Qwen3-0.6B.jinja`), so `llama-server --jinja` treats it as a Qwen3:
it extracts `<think>` reasoning, parses `<tool_call>` JSON and builds the tool-call grammar.

What the model does (greedy decoding; the margins are large enough that llama-server's default sampler
gives the same answer):

* every answer starts with the reasoning `<think>Let me think</think>` and then, depending on the context:
* no tools offered and no tool result in the prompt: `Hello! This tiny model says hello to everyone.
  How can I help you today?`
* tools offered (the template's `<tools>` block is in the prompt), no tool result yet: one tool call,
  `<tool_call>` + "\n\n\n" + `{"name": "<tool>","arguments":{...}}</tool_call>`, which llama-server
  parses into `tool_calls`. The name is the first offered in the preference order exec_command,
  get_weather, get_time (llama.cpp's tool-call grammar rejects a name not offered, so the next one is
  taken), and the arguments follow the tool's first parameter: `city` -> "Paris", `cmd` ->
  "touch llama.txt" (Codex's shell tool). Without a grammar (tool_choice "none" with the tools still
  in the prompt) nothing corrects the first choice: the text is the exec_command markup with "city".
  Under any grammar (tool calls, `json_schema`) other names and schemas still give valid output: a
  preferred token is only taken when the grammar allows it, and the fallback preferences close strings
  and objects as early as possible (the `json_schema` answer for {city, population} is
  `{"city":"touch llama.txt","population":0}`).
* a tool result (`<tool_response>`) in the prompt: `Here is what the tool returned`.

How: one transformer layer on a 128-dim residual stream. The embedding of each token the model ever
emits is a one-hot "state" (plus an always-on bias dimension), and the output matrix maps each state to
its successor: the fixed texts are chains of distinct tokens. The only decision point is the token
after `</think>` ("\n\n"). One attention head (position-independent: it uses RoPE's slowest pair)
looks for the tokens `<tool_response>` (score 40) and `tools` (score 20) and copies a feature for the
one it finds; a two-unit SwiGLU gate turns "at the decision point AND feature present" into a strong
logit for `<tool_call>` or for `Here`, so the features change nothing anywhere else.

Run with the tree's own gguf-py on PYTHONPATH (it needs numpy), see tests/support/llamacpp/build.sh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf  # llama.cpp's gguf-py, from the source tree (PYTHONPATH)
import numpy as np

N_EMBD = 128
HEAD_DIM = 128
N_FF = 32
N_CTX_TRAIN = 40960

# Qwen3's added tokens, at the ids Qwen3 gives them (Qwen2's vocabulary leaves these ids as padding).
ADDED_TOKENS: dict[int, tuple[str, int]] = {
    151646: ("<|object_ref_start|>", gguf.TokenType.CONTROL),
    151647: ("<|object_ref_end|>", gguf.TokenType.CONTROL),
    151648: ("<|box_start|>", gguf.TokenType.CONTROL),
    151649: ("<|box_end|>", gguf.TokenType.CONTROL),
    151650: ("<|quad_start|>", gguf.TokenType.CONTROL),
    151651: ("<|quad_end|>", gguf.TokenType.CONTROL),
    151652: ("<|vision_start|>", gguf.TokenType.CONTROL),
    151653: ("<|vision_end|>", gguf.TokenType.CONTROL),
    151654: ("<|vision_pad|>", gguf.TokenType.CONTROL),
    151655: ("<|image_pad|>", gguf.TokenType.CONTROL),
    151656: ("<|video_pad|>", gguf.TokenType.CONTROL),
    151657: ("<tool_call>", gguf.TokenType.USER_DEFINED),
    151658: ("</tool_call>", gguf.TokenType.USER_DEFINED),
    151659: ("<|fim_prefix|>", gguf.TokenType.CONTROL),
    151660: ("<|fim_middle|>", gguf.TokenType.CONTROL),
    151661: ("<|fim_suffix|>", gguf.TokenType.CONTROL),
    151662: ("<|fim_pad|>", gguf.TokenType.CONTROL),
    151663: ("<|repo_name|>", gguf.TokenType.CONTROL),
    151664: ("<|file_sep|>", gguf.TokenType.CONTROL),
    151665: ("<tool_response>", gguf.TokenType.USER_DEFINED),
    151666: ("</tool_response>", gguf.TokenType.USER_DEFINED),
    151667: ("<think>", gguf.TokenType.USER_DEFINED),
    151668: ("</think>", gguf.TokenType.USER_DEFINED),
}
EOS = "<|im_end|>"
BOS = "<|endoftext|>"

# Residual-stream dimensions with a fixed meaning; token states follow from FIRST_STATE_DIM.
BIAS_DIM = 0  # 1 in every embedding: carries the fallback preferences
MARK_RESPONSE_DIM = 1  # embedding of <tool_response>
MARK_TOOLS_DIM = 2  # embedding of `tools` (the template's <tools> block)
SEEN_RESPONSE_DIM = 3  # attention output: a tool result is in the context
SEEN_TOOLS_DIM = 4  # attention output: tools are offered
DO_TOOL_DIM = 5  # FFN output: at the decision point, with tools
DO_ANSWER_DIM = 6  # FFN output: at the decision point, after a tool result
FIRST_STATE_DIM = 7

DECISION = "ĊĊ"  # "\n\n": after </think>, and the end of the prompt when thinking is switched off

# Successor preferences per emitted token (GPT-2 byte-level spelling, "Ġ" is a space), best first.
# A token may be listed as a key once only: the model's whole memory is the current token.
CHAINS: dict[str, list[str]] = {
    # The generation prompt ends "<|im_start|>assistant\n".
    "Ċ": ["<think>"],
    "<think>": ["Let"],
    "Let": ["Ġme"],
    "Ġme": ["Ġthink"],
    "Ġthink": ["</think>"],
    "</think>": [DECISION],
    DECISION: ["Hello"],  # no feature: the greeting; the FFN overrides it with <tool_call> or Here
    # The greeting. After it, <tool_call> is the way out when a grammar forces a call.
    "Hello": ["!"],
    "!": ["ĠThis"],
    "ĠThis": ["Ġtiny"],
    "Ġtiny": ["Ġmodel"],
    "Ġmodel": ["Ġsays"],
    "Ġsays": ["Ġhello"],
    "Ġhello": ["Ġto"],
    "Ġto": ["Ġeveryone"],
    "Ġeveryone": ["."],
    ".": ["ĠHow"],
    "ĠHow": ["Ġcan"],
    "Ġcan": ["ĠI"],
    "ĠI": ["Ġhelp"],
    "Ġhelp": ["Ġyou"],
    "Ġyou": ["Ġtoday"],
    "Ġtoday": ["?"],
    "?": [EOS, "<tool_call>"],
    # After a tool result.
    "Here": ["Ġis"],
    "Ġis": ["Ġwhat"],
    "Ġwhat": ["Ġthe"],
    "Ġthe": ["Ġtool"],
    "Ġtool": ["Ġreturned"],
    "Ġreturned": [EOS, "<tool_call>"],
    # One tool call: {"name": "get_weather", "arguments":{"city":"Paris"}}, every token distinct.
    # llama.cpp's parser wants "<tool_call>\n"; "\n" alone is the prompt's last token (taken above),
    # and "\n\n" is the decision point, so the newline comes as "\n\n\n" (its grammar allows that).
    "<tool_call>": ["ĊĊĊ"],
    "ĊĊĊ": ['{"'],
    '{"': ["name"],
    "name": ['":'],
    '":': ['Ġ"'],
    'Ġ"': ["exec", "get"],  # exec_command first: Codex also offers tools named get_*
    "get": ["_weather", "_time"],
    "exec": ["_command"],
    "_weather": ['","'],
    "_time": ['","'],
    "_command": ['","'],
    '","': ["arguments"],
    "arguments": ['":{"'],
    '":{"': ["city", "cmd"],
    "city": ['":"'],
    '":"': ["Paris"],
    "Paris": ['"}}'],
    "cmd": ['"'],
    '"': [':"'],
    ':"': ["touch"],
    "touch": ["Ġllama"],
    "Ġllama": [".txt"],
    ".txt": ['"}}'],
    '"}}': ["</tool_call>"],
    "</tool_call>": [EOS, "<tool_call>"],
}

# Preferences in any other state (a token the grammar forced): end, else close strings and objects.
FALLBACK: list[str] = [EOS, '"', "}", "]", "{", "</tool_call>", "0"]

SUCCESSOR_WEIGHTS = [20.0, 15.0]  # first and second choice of a state
FALLBACK_TOP = 9.0  # FALLBACK[0]; the rest one less each, all below any successor
TOOLS_SCORE = 20.0  # attention score of a `tools` token (every other token scores 0)
RESPONSE_SCORE = 40.0  # attention score of <tool_response>: wins over `tools` by e^20


def load_vocab(path: Path) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of llama.cpp's Qwen2 vocabulary file, with Qwen3's added tokens."""
    reader = gguf.GGUFReader(str(path))
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    merges = list(reader.fields["tokenizer.ggml.merges"].contents())
    for token_id, (text, kind) in ADDED_TOKENS.items():
        if not tokens[token_id].startswith("[PAD"):
            raise SystemExit(f"vocabulary slot {token_id} is {tokens[token_id]!r}, expected padding")
        tokens[token_id] = text
        types[token_id] = int(kind)
    return tokens, types, merges


def build_weights(ids: dict[str, int], n_vocab: int) -> dict[str, np.ndarray]:
    """Every tensor of the one-layer model, as numpy arrays in (out, in) layout."""
    states = list(CHAINS)
    for successors in CHAINS.values():
        for token in successors:
            if token not in CHAINS and token != EOS:
                raise SystemExit(f"{token!r} is emitted but has no successor entry")
    state_dim = {token: FIRST_STATE_DIM + i for i, token in enumerate(states)}
    if FIRST_STATE_DIM + len(states) > N_EMBD:
        raise SystemExit("too many states for the residual width")

    embd = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    embd[:, BIAS_DIM] = 1.0
    embd[ids["<tool_response>"], MARK_RESPONSE_DIM] = 1.0
    embd[ids["tools"], MARK_TOOLS_DIM] = 1.0
    for token, dim in state_dim.items():
        embd[ids[token], dim] = 1.0

    # Attention: q is constant; k is non-zero only for the two markers; NEOX RoPE pairs dim i with
    # i + HEAD_DIM/2, and the last two pairs turn by ~1e-6 rad per position, so the score ignores position.
    # After q_norm/k_norm and the 1/sqrt(HEAD_DIM) scale a score is 8 * k_norm weight.
    resp_k, tools_k = HEAD_DIM - 1, HEAD_DIM - 2
    wq = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wq[resp_k, BIAS_DIM] = 1.0
    wq[tools_k, BIAS_DIM] = 1.0
    wk = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wk[resp_k, MARK_RESPONSE_DIM] = 1.0
    wk[tools_k, MARK_TOOLS_DIM] = 1.0
    q_norm = np.ones(HEAD_DIM, dtype=np.float32)
    k_norm = np.ones(HEAD_DIM, dtype=np.float32)
    k_norm[resp_k] = RESPONSE_SCORE / 8.0
    k_norm[tools_k] = TOOLS_SCORE / 8.0
    # v carries the marker's identity; a marker's normalised embedding has 8 in its marker dim.
    wv = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    wv[0, MARK_RESPONSE_DIM] = 1.0
    wv[1, MARK_TOOLS_DIM] = 1.0
    wo = np.zeros((N_EMBD, HEAD_DIM), dtype=np.float32)
    wo[SEEN_RESPONSE_DIM, 0] = 0.25  # feature of size 2 when the head attends to a marker
    wo[SEEN_TOOLS_DIM, 1] = 0.25

    # SwiGLU: silu(5*decision - 3*bias) is ~0 except at the decision token; up = the feature.
    decision_dim = state_dim[DECISION]
    gate = np.zeros((N_FF, N_EMBD), dtype=np.float32)
    up = np.zeros((N_FF, N_EMBD), dtype=np.float32)
    down = np.zeros((N_EMBD, N_FF), dtype=np.float32)
    for unit, (feature, out_dim) in enumerate(
        ((SEEN_TOOLS_DIM, DO_TOOL_DIM), (SEEN_RESPONSE_DIM, DO_ANSWER_DIM))
    ):
        gate[unit, decision_dim] = 5.0
        gate[unit, BIAS_DIM] = -3.0
        up[unit, feature] = 1.0
        down[out_dim, unit] = 0.1

    output = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    for rank, token in enumerate(FALLBACK):
        output[ids[token], BIAS_DIM] = FALLBACK_TOP - rank
    for token, successors in CHAINS.items():
        for weight, successor in zip(SUCCESSOR_WEIGHTS, successors, strict=False):
            output[ids[successor], state_dim[token]] = weight
    output[ids["<tool_call>"], DO_TOOL_DIM] = 20.0
    output[ids["Here"], DO_ANSWER_DIM] = 20.0

    ones = np.ones(N_EMBD, dtype=np.float32)
    return {
        "token_embd.weight": embd.astype(np.float16),
        "output_norm.weight": ones,
        "output.weight": output.astype(np.float16),
        "blk.0.attn_norm.weight": ones.copy(),
        "blk.0.attn_q.weight": wq,
        "blk.0.attn_k.weight": wk,
        "blk.0.attn_v.weight": wv,
        "blk.0.attn_output.weight": wo,
        "blk.0.attn_q_norm.weight": q_norm,
        "blk.0.attn_k_norm.weight": k_norm,
        "blk.0.ffn_norm.weight": ones.copy(),
        "blk.0.ffn_gate.weight": gate,
        "blk.0.ffn_up.weight": up,
        "blk.0.ffn_down.weight": down,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, required=True, help="llama.cpp models/ggml-vocab-qwen2.gguf")
    parser.add_argument("--template", type=Path, help="chat template (default: the tree's Qwen3-0.6B one)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    template_path = args.template or args.vocab.parent / "templates" / "Qwen-Qwen3-0.6B.jinja"
    template = template_path.read_text(encoding="utf-8")

    tokens, types, merges = load_vocab(args.vocab)
    ids = {token: i for i, token in enumerate(tokens)}
    missing = [t for t in {*CHAINS, *FALLBACK, EOS, BOS, "tools", "<tool_response>"} if t not in ids]
    if missing:
        raise SystemExit(f"tokens not in the vocabulary: {missing}")
    weights = build_weights(ids, len(tokens))

    tmp = args.out.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(tmp), "qwen3")
    writer.add_name("tiny-qwen3-test")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(ids[EOS])
    writer.add_pad_token_id(ids[BOS])
    writer.add_bos_token_id(ids[BOS])
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)
    for name, array in weights.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1_000_000} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
