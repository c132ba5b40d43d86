"""Predictions of a run's ensemble for inputs stored in a ``.npy`` file (``freetickets predict``).

Input: a numeric ``.npy`` array in one of the layouts of :mod:`freetickets.ensembles.inputs`
(``(N, *input_shape)``, a single input, channels-last images, MNIST-1D as ``(N, 40)``;
``input_shape`` from the run's manifest). Object arrays are refused (``allow_pickle=False``).

Normalisation: by default the inputs are in the data set's raw form (CIFAR/ImageNet: ``uint8``
pixel values as stored; MNIST-1D: the package's float arrays) and the run's recorded
normalisation is applied, exactly as in training and evaluation. ``normalized=True``
(``--normalized``) takes inputs already in the members' input space. Rows holding NaN or
infinity are refused in one line that counts them. The Python equivalent is
:meth:`Ensemble.preprocess` followed by :meth:`Ensemble.predict_proba`.

Output (written atomically), chosen by the output suffix:

* ``.npz``: arrays ``probs`` ``(N, C)`` float32 (mean member probability), ``pred`` ``(N,)``
  int64 (argmax), ``entropy``, ``mutual_information``, ``disagreement`` ``(N,)`` float32 (see
  :meth:`Ensemble.uncertainty`).
* ``.csv``: one row per input, header ``prob_0,...,prob_{C-1},pred,entropy,mutual_information,disagreement``.

Default output path: ``<input stem>.pred.npz`` next to the input.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from freetickets.errors import UserError
from freetickets.ensembles.ensemble import Ensemble, uncertainty_from_probs
from freetickets.ensembles.inputs import prepare_inputs
from freetickets.utils.io import atomic_write, atomic_write_text

__all__ = ["predict_file", "load_inputs", "UNCERTAINTY_COLUMNS"]

UNCERTAINTY_COLUMNS = ("entropy", "mutual_information", "disagreement")


def load_inputs(input_path: str | os.PathLike) -> np.ndarray:
    """Read a numeric ``.npy`` file as it is stored (dtype and shape unchanged).

    Raises :class:`UserError` for a missing/unreadable file, an archive, an object array or a
    non-numeric dtype.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise UserError(f"{input_path}: input file not found")
    try:
        arr = np.load(input_path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UserError(f"{input_path}: object arrays are not accepted; save a numeric array") from None
        raise UserError(f"{input_path}: not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{input_path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise UserError(f"{input_path}: expected a single .npy array, got an archive")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise UserError(f"{input_path}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        arr = arr.astype(arr.dtype.newbyteorder("="))  # torch reads native byte order only
    return arr


def predict_file(
    run_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    partial: bool = False,
    normalized: bool = False,
) -> Path:
    """Predict class probabilities and uncertainty for every input in ``input_path``.

    Loads the completed run ``run_dir`` as an :class:`Ensemble`, evaluates the inputs in batches
    of ``batch_size``, writes ``output_path`` (``.npz`` or ``.csv``; default
    ``<input stem>.pred.npz`` next to the input) atomically and returns its path.
    ``normalized``: the inputs are already normalised (else the run's normalisation is applied).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    input_path = Path(input_path)
    output_path = Path(output_path) if output_path is not None else input_path.with_name(
        input_path.stem + ".pred.npz"
    )
    suffix = output_path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise UserError(f"output: unsupported suffix {output_path.suffix!r}; use .npz or .csv")

    ens = Ensemble.load(run_dir, device=device, partial=partial, compact="auto")  # channel runs run slim
    manifest = ens.manifest or {}
    inputs = prepare_inputs(load_inputs(input_path), manifest, normalized=normalized, what=str(input_path))

    outs: dict[str, list[torch.Tensor]] = {k: [] for k in ("probs", *UNCERTAINTY_COLUMNS)}
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start : start + batch_size].to(ens.device)
        member_probs = ens.member_probs(x)
        outs["probs"].append(member_probs.mean(dim=0).float().cpu())
        unc = uncertainty_from_probs(member_probs)
        for k in UNCERTAINTY_COLUMNS:
            outs[k].append(unc[k].float().cpu())
    num_classes = int(manifest.get("num_classes", 0)) or None
    result = {
        k: (torch.cat(v).numpy() if v else np.zeros((0, num_classes or 0) if k == "probs" else (0,), np.float32))
        for k, v in outs.items()
    }
    result["pred"] = result["probs"].argmax(axis=1).astype(np.int64) if len(result["probs"]) else np.zeros(0, np.int64)

    if suffix == ".npz":
        atomic_write(output_path, lambda f: np.savez(f, **result))
    else:
        probs = result["probs"]
        header = [f"prob_{c}" for c in range(probs.shape[1])] + ["pred", *UNCERTAINTY_COLUMNS]
        buf = io.StringIO()
        buf.write(",".join(header) + "\n")
        for i in range(probs.shape[0]):
            row = [repr(float(v)) for v in probs[i]] + [str(int(result["pred"][i]))]
            row += [repr(float(result[k][i])) for k in UNCERTAINTY_COLUMNS]
            buf.write(",".join(row) + "\n")
        atomic_write_text(output_path, buf.getvalue())
    return output_path
