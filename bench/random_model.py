"""A save_pretrained folder with random weights, for speed and memory runs where real weights cannot go.

    python bench/random_model.py --like FOLDER --out DIR                  # FOLDER's config and tokenizer
    python bench/random_model.py --preset tinyllama-1.1b --tokenizer FOLDER --out DIR --dtype bfloat16

Time and memory do not depend on the weights' values, so a random model of the right shape
measures them (the GPU machine has no network and takes 64 MiB of files per call: the embedded
model's 270 MB of weights cannot travel, its config and tokenizer can). The vocabulary is the
tokenizer's, so a preset's embedding and head are sized to it (TinyLlama has 32,000 tokens;
SmolLM2's tokenizer has 49,152, which adds 35 M parameters to the 1.1 B).
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESETS = {
    # TinyLlama-1.1B (arXiv 2401.02385): the paper's compression model
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           tie_word_embeddings=False),
    # Llama-3-8B's shape, for the arithmetic in README "Scale"
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--like", type=Path, help="a folder whose config.json and tokenizer to copy")
    ap.add_argument("--preset", choices=list(PRESETS))
    ap.add_argument("--tokenizer", type=Path, help="with --preset: the folder whose tokenizer to use")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if (args.like is None) == (args.preset is None):
        ap.error("give exactly one of --like and --preset")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok_dir = args.like or args.tokenizer
    if tok_dir is None:
        ap.error("--preset needs --tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if args.like is not None:
        config = AutoConfig.from_pretrained(args.like)
    else:
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             **PRESETS[args.preset])
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {type(model).__name__}, {n / 1e9:.3f} B parameters, {args.dtype}, random (seed {args.seed})")


if __name__ == "__main__":
    main()
