"""Write a tiny multimodal projector (mmproj GGUF) for the tiny Qwen3 test model, so images work.

Why: llama-server answers a chat request with an image part with a 500 ("image input is not
supported") unless it was started with `--mmproj`, and the tiny model of make_model.py is text-only.
With this projector the real server decodes the image, runs a real (tiny) vision encoder through
llama.cpp's mtmd/clip code and feeds the result into the text model, so image input is tested end to
end against the real backend rather than assumed.

What: the simplest projector llama.cpp's clip loader knows, LLaVA's `mlp` type
(`clip.projector_type = "mlp"`, graph in the tree's tools/mtmd/models/llava.cpp):

* a CLIP-style ViT: 32x32 RGB input (the fixed-size preprocessor resizes any image to that), 16x16
  patches, so 2x2 = 4 patches; a patch-embedding convolution, a class embedding, position embeddings,
  a pre-layernorm and ONE transformer block (layernorms, one attention head, GELU FFN), width 32.
  LLaVA reads the hidden state before the last block by default, which with one block would skip it,
  so `clip.vision.feature_layer = [1]` makes the block's output the features (as Granite-vision does);
* the LLaVA projector: `mm.0` (32 -> 128), GELU, `mm.2` (128 -> 128 = the text model's n_embd, which
  mtmd checks against the text model at load time).

Every image becomes 4 embeddings in the prompt (no begin/end tokens for this projector type). The
encoder's weights are small seeded-random numbers (numpy's default_rng(0)), so the arithmetic is real
but fixed; `mm.2`'s weight is zero and its bias is the text model's always-on bias dimension, so each
image embedding equals a token embedding the tiny model does not key on (no marker, no state: its
attention key and value are zero, see make_model.py). The answer to a prompt with an image is
therefore the same as without it (the greeting), whatever the image shows: deterministic, and what
tests/support/llamacpp/behaviour.py describes.

Run with the tree's own gguf-py on PYTHONPATH (it needs numpy), see tests/support/llamacpp/build.sh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf  # llama.cpp's gguf-py, from the source tree (PYTHONPATH)
import numpy as np

TEXT_N_EMBD = 128  # make_model.N_EMBD: the projector's output width must equal it
TEXT_BIAS_DIM = 0  # make_model.BIAS_DIM: 1 in every token embedding, keyed on by nothing

IMAGE_SIZE = 32
PATCH_SIZE = 16
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
V_EMBD = 32
V_HEADS = 1
V_FF = 64  # different from V_EMBD: clip.cpp swaps up/down of llava FFNs whose down input width is n_embd
MM_HIDDEN = TEXT_N_EMBD
EPS = 1e-5
SEED = 0
WEIGHT_SCALE = 0.02
# CLIP's image normalisation (OpenAI CLIP), as llava mmproj files carry it.
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def build_weights() -> dict[str, np.ndarray]:
    """Every tensor of the projector, numpy layout (out, in); all float32 (clip wants f32 norms)."""
    rng = np.random.default_rng(SEED)

    def small(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * WEIGHT_SCALE).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    mm_2_b = zeros(TEXT_N_EMBD)
    mm_2_b[TEXT_BIAS_DIM] = 1.0
    return {
        # (out channels, in channels, kh, kw): ggml_conv_2d's kernel [kw, kh, c_in, c_out]
        "v.patch_embd.weight": small(V_EMBD, 3, PATCH_SIZE, PATCH_SIZE),
        "v.class_embd": small(V_EMBD),
        "v.position_embd.weight": small(N_PATCHES + 1, V_EMBD),
        "v.pre_ln.weight": ones(V_EMBD),
        "v.pre_ln.bias": zeros(V_EMBD),
        "v.blk.0.ln1.weight": ones(V_EMBD),
        "v.blk.0.ln1.bias": zeros(V_EMBD),
        "v.blk.0.attn_q.weight": small(V_EMBD, V_EMBD),
        "v.blk.0.attn_q.bias": zeros(V_EMBD),
        "v.blk.0.attn_k.weight": small(V_EMBD, V_EMBD),
        "v.blk.0.attn_k.bias": zeros(V_EMBD),
        "v.blk.0.attn_v.weight": small(V_EMBD, V_EMBD),
        "v.blk.0.attn_v.bias": zeros(V_EMBD),
        "v.blk.0.attn_out.weight": small(V_EMBD, V_EMBD),
        "v.blk.0.attn_out.bias": zeros(V_EMBD),
        "v.blk.0.ln2.weight": ones(V_EMBD),
        "v.blk.0.ln2.bias": zeros(V_EMBD),
        "v.blk.0.ffn_up.weight": small(V_FF, V_EMBD),
        "v.blk.0.ffn_up.bias": zeros(V_FF),
        "v.blk.0.ffn_down.weight": small(V_EMBD, V_FF),
        "v.blk.0.ffn_down.bias": zeros(V_EMBD),
        "mm.0.weight": small(MM_HIDDEN, V_EMBD),
        "mm.0.bias": zeros(MM_HIDDEN),
        "mm.2.weight": zeros(TEXT_N_EMBD, MM_HIDDEN),
        "mm.2.bias": mm_2_b,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    tmp = args.out.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(tmp), "clip")  # clip.cpp's own architecture name for projectors
    writer.add_name("tiny-qwen3-test-mmproj")
    writer.add_description("tiny LLaVA-style projector for the tiny Qwen3 test model (tests only)")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("mlp")
    writer.add_vision_image_size(IMAGE_SIZE)
    writer.add_vision_patch_size(PATCH_SIZE)
    writer.add_vision_embedding_length(V_EMBD)
    writer.add_vision_feed_forward_length(V_FF)
    writer.add_vision_block_count(1)
    writer.add_vision_head_count(V_HEADS)
    writer.add_vision_projection_dim(TEXT_N_EMBD)
    writer.add_vision_attention_layernorm_eps(EPS)
    writer.add_vision_image_mean(IMAGE_MEAN)
    writer.add_vision_image_std(IMAGE_STD)
    writer.add_vision_use_gelu(True)
    writer.add_vision_feature_layers([1])
    for name, array in build_weights().items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1000} kB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
