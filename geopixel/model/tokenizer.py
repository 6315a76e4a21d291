"""Tokenizer loading: a local HF tokenizer, or a built-in byte-level one for random-init models.

The special tokens GeoPixel adds (``[SEG]``, ``<p>``, ``</p>``) and the image placeholder ``<image>``
(expanded to one placeholder per visual embedding by the data pipeline) are added to either.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

SEG_TOKEN, P_START, P_END, IMAGE_TOKEN = "[SEG]", "<p>", "</p>", "<image>"
SPECIAL_TOKENS = [SEG_TOKEN, P_START, P_END, IMAGE_TOKEN]

log = logging.getLogger("geopixel")


def byte_level_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over the 256 byte symbols (no merges) plus ``<s>``, ``</s>``, ``<pad>``.

    Deterministic and download-free; one token per UTF-8 byte, so only for small/random models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def load_tokenizer(path: str | None, llm_path: str | None) -> Any:
    """The tokenizer from ``path``, else ``llm_path``, else :func:`byte_level_tokenizer`; specials added.

    A tokenizer without a pad token gets its EOS (or ``<pad>``) as pad.
    """
    source = path or llm_path
    if source:
        from transformers import AutoTokenizer

        if not Path(source).is_dir():
            raise FileNotFoundError(f"tokenizer folder {source} does not exist (nothing is downloaded)")
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    else:
        log.warning("no tokenizer path: using the built-in byte-level tokenizer (for random-init models only)")
        tok = byte_level_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or "<pad>"
    tok.padding_side = "right"
    return tok


__all__ = ["IMAGE_TOKEN", "P_END", "P_START", "SEG_TOKEN", "SPECIAL_TOKENS", "byte_level_tokenizer", "load_tokenizer"]
