"""`vlmforge bench packing`: padding fraction of the recipe's SFT batches without and with
sequence packing, on the stage's own mixture (ratio = unpacked / packed padding).

Like `bench loader`, it writes its own shards of the stage's sources and trains its own
tokenizer, so no pipeline run is needed; lengths are the encoded conversations (text plus
image tokens) in stream order.
"""

from __future__ import annotations

import tempfile
from itertools import islice
from pathlib import Path


def bench_packing(recipe_path: str = "configs/tiny.yaml", per_source: int = 128,
                  samples: int = 512) -> dict:
    from components.data.corpus import generate_corpus
    from components.data.tokenizer import corpus_texts, train_tokenizer
    from components.recipe import load_recipe
    from components.training.data_stream import sample_stream
    from components.training.packing import padding_fraction
    from flows.bench.loader import tiny_model_and_encoder

    recipe = load_recipe(recipe_path)
    stage = recipe.stages_of("sft")[0]
    params = recipe.data.model_copy(update={
        "splits": {"train": {s: per_source for s in stage.sources}},
        "shard_size": per_source})
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-packing-") as tmp:
        generate_corpus(params, tmp)
        tokenizer = train_tokenizer(corpus_texts(tmp, "train"), recipe.data.vocab_size,
                                    split_digits=recipe.data.split_digits)
        _, encoder = tiny_model_and_encoder(recipe, stage, tokenizer)
        stream = sample_stream(Path(tmp), stage.sources, recipe.seed, stage.text_ratio, stage.mixture)
        encoded = [encoder.encode(s.record["messages"], s.images) for s in islice(stream, samples)]
    lengths = [len(e.input_ids) for e in encoded if e is not None]
    size, max_len = stage.train.batch_size, recipe.model.max_length
    unpacked = padding_fraction(lengths, size, max_len, packing=False)
    packed = padding_fraction(lengths, size, max_len, packing=True)
    return {"padding_unpacked": round(unpacked, 3), "padding_packed": round(packed, 3),
            "ratio": round(unpacked / packed, 2) if packed else None,
            "recipe": recipe.name, "stage": stage.name, "sources": stage.sources,
            "text_ratio": stage.text_ratio, "batch_size": size, "max_length": max_len,
            "samples": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1)}
