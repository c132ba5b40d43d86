"""Optional integrations of :class:`~freetickets.sparse.SparseEngine` with training frameworks.

* :mod:`freetickets.integrations.lightning`: ``SparseTrainingCallback`` for PyTorch Lightning
  (``pip install freetickets[lightning]``).
* :mod:`freetickets.integrations.transformers`: ``SparseTrainingCallback`` for the Hugging Face
  ``Trainer`` (``pip install freetickets[transformers]``).

Each module imports its framework on import; the rest of the package never imports them.
"""
