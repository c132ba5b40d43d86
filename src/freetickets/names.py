"""Method names, importable without torch (the CLI builds ``--help`` from them).

The recipes in :mod:`freetickets.methods` are registered under exactly these names (a test
checks that the two agree).
"""
METHODS = ("dense", "deep", "dst", "edst", "pf", "static", "snapshot", "mimo", "batchensemble", "mcdropout")

#: What ``freetickets demo`` trains, in this order (PF fine-tunes the deep ensemble's members).
DEMO_METHODS = ("dense", "deep", "dst", "edst", "static", "pf", "snapshot", "mimo", "batchensemble", "mcdropout")

#: ``SparseEngine(sparse_init=...)``: leave surviving weights as drawn, or rescale them by 1/sqrt(density).
SPARSE_INITS = ("none", "rescale")

#: ``SparseEngine(structure=...)`` / ``--structure``: free weights (the paper) or whole channels.
STRUCTURES = ("unstructured", "channel")
#: Methods whose tickets may be channel-structured.
CHANNEL_METHODS = ("dst", "edst", "static", "pf")
