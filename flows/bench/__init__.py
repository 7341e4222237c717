"""`vlmforge bench NAME`: one module per measurement, each printing its figures side by side
with a ratio (flows/commands/bench.py lists them)."""
