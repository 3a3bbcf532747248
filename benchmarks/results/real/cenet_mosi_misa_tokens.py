"""CENET on mosi-misa with word-piece token ids (the table in cenet_mosi_misa.md).

mosi-misa carries no token ids (its text is one MiniLM vector per word), and CENET
fine-tunes a text encoder on token ids. This script registers ``mosi-misa-tokens`` for
its own process: mosi-misa's utterances, folds, audio and video as they are, with each
transcript tokenised by the packaged MiniLM's tokenizer (``[CLS]`` pieces ``[SEP]``) as
the text's token ids (annotation ``text_bert``); the text features are a one-wide zero
placeholder of the ids' width, which CENET does not read (it encodes the text itself).
Then it runs ``imsa.run`` as ``imsa run`` would.

Usage: ``python cenet_mosi_misa_tokens.py OUT EPOCHS [DATA_DIR]``, then ``imsa show OUT --markdown``.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

import imsa
from imsa.data.mosi_misa import FILES, load_mosi_misa
from imsa.data.registry import register_dataset
from imsa.nn.text_encoder import load_tokenizer


@register_dataset("mosi-misa-tokens", description="mosi-misa with MiniLM word-piece ids of its transcripts", family="mosi", files=FILES)
def load_with_tokens(root, **options):
    """mosi-misa with the transcripts' word-piece ids as ``text_bert``."""
    data = load_mosi_misa(root, **options)
    encoded = load_tokenizer(None)(list(data.transcripts), padding=True, truncation=True, max_length=128, return_tensors="np")
    ids, mask = encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
    n, width = ids.shape
    return dataclasses.replace(
        data,
        name="mosi-misa-tokens",
        features={**data.features, "l": np.zeros((n, width, 1), np.float32)},
        lengths={**data.lengths, "l": mask.sum(1)},
        annotations={**data.annotations, "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1)},
    )


if __name__ == "__main__":
    out, epochs = sys.argv[1], int(sys.argv[2])
    data_dir = sys.argv[3] if len(sys.argv) > 3 else None
    imsa.run("cenet", "mosi-misa-tokens", seeds=(1,), out=out, overrides={"epochs": epochs}, data_dir=data_dir, context=imsa.RunContext(threads=1))
