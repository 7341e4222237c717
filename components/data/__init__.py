"""Synthetic VLM data: generators, webdataset shards, manifests and the tokenizer.

Submodules are imported explicitly (``from components.data.shards import read_samples``)
so that importing the package stays cheap.
"""
