"""Pinned messages of :func:`freetickets.ensembles.predict.load_inputs` for files numpy cannot
read as a plain array: object arrays and pickled files are refused as such (never unpickled),
any other unreadable file is named with numpy's reason."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from freetickets.ensembles.predict import load_inputs
from freetickets.errors import UserError


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([1, "a"], dtype=object))
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: object arrays are not accepted; save a numeric "
                                                        "array") + "$"):
        load_inputs(path)


def test_a_pickle_is_refused_like_an_object_array(tmp_path):
    path = tmp_path / "data.npy"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError, match="object arrays are not accepted"):
        load_inputs(path)


def test_a_broken_header_names_numpys_reason(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(3.0))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(good.read_bytes().replace(b"'descr': '<f8'", b"'descr': 'zz'"))
    with pytest.raises(UserError, match="^" + re.escape(f"{bad}: not a readable .npy array (Cannot parse header")):
        load_inputs(bad)
