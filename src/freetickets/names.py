"""Method names, importable without torch (the CLI builds ``--help`` from them).

The recipes in :mod:`freetickets.methods` are registered under exactly these names (a test
checks that the two agree).
"""
METHODS = ("dense", "deep", "dst", "edst", "pf", "static", "snapshot", "mimo", "batchensemble", "mcdropout")
