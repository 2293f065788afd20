"""Saved valuation files: arrays in one ``.npz`` (no pickle) beside one JSON file.

Shared by the fitted state (:meth:`ValuationModel.save`) and the training plan
(:meth:`TrainingPlan.save`), which both carry the stage-0 state (feature space, cluster model);
:func:`fitted_arrays` and :func:`fitted_from_arrays` name the arrays of the fitted state.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation.clustering import ClusterModel, FeatureSpace
from ecoval_ops.valuation.production import ClusterGame
from ecoval_ops.valuation.propagation_state import PropagationState
from ecoval_ops.valuation.protocols import FittedState
from ecoval_ops.valuation.result import ValuationResult

__all__ = [
    "fitted_arrays",
    "fitted_from_arrays",
    "read_saved",
    "stage0_arrays",
    "stage0_from_arrays",
    "write_saved",
]


def stage0_arrays(space: FeatureSpace, model: ClusterModel) -> dict[str, NDArray[Any]]:
    """The feature space and cluster model as named arrays."""
    return {
        "space_mean": space.mean,
        "space_scale": space.scale,
        "space_components": space.components,
        "centroids": model.centroids,
        "s2": model.s2,
    }


def stage0_from_arrays(arrays: dict[str, NDArray[Any]]) -> tuple[FeatureSpace, ClusterModel]:
    """Inverse of :func:`stage0_arrays`."""
    space = FeatureSpace(arrays["space_mean"], arrays["space_scale"], arrays["space_components"])
    return space, ClusterModel(centroids=arrays["centroids"], s2=arrays["s2"])


def write_saved(folder: Path, arrays_file: str, arrays: dict[str, NDArray[Any]], meta_file: str, meta: Any) -> Path:
    """Write ``arrays`` (no object arrays: they would need pickle) and ``meta`` as JSON into ``folder``.

    Raises:
        InvalidInputError: an object array, such as labels of mixed Python types.
    """
    if any(a.dtype == object for a in arrays.values()):
        raise InvalidInputError("labels of mixed Python types cannot be saved; use int or str labels")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / arrays_file, allow_pickle=False, **arrays)
    (folder / meta_file).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def read_saved(
    folder: Path, arrays_file: str, meta_file: str, what: str, *, mapped: Collection[str] = ()
) -> tuple[Any, dict[str, NDArray[Any]]]:
    """The JSON and the arrays of :func:`write_saved`; arrays load with ``allow_pickle=False``.

    The arrays named in ``mapped`` are memory-mapped read-only from the file instead of read, so
    a reader that touches some of their rows reads only those pages, and the processes of a host
    that map the same file share one copy in its page cache. The file must then not be rewritten
    in place while mapped (the workspace replaces folders by renaming).

    Raises:
        InvalidInputError: the folder does not hold them (``what`` names the expected content).
    """
    try:
        meta = json.loads((folder / meta_file).read_text())
        with np.load(folder / arrays_file, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files if name not in mapped}
        arrays |= {name: _mapped(folder / arrays_file, name) for name in mapped}
    except (OSError, ValueError, KeyError) as e:
        raise InvalidInputError(f"{folder} does not hold a saved {what}: {e}") from e
    return meta, arrays


def _mapped(path: Path, name: str) -> NDArray[Any]:
    """The array ``name`` of the ``.npz`` at ``path`` memory-mapped where it lies in the archive.

    :func:`numpy.savez` stores each array as an uncompressed ``.npy`` member, so its data are a
    byte range of the file: after the member's local header (30 bytes, its name and its extra
    field) and the ``.npy`` header.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name} is compressed in {path.name} and cannot be mapped")
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{name} holds objects and cannot be mapped")
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def fitted_arrays(
    classes: NDArray[Any],
    space: FeatureSpace,
    model: ClusterModel,
    game: ClusterGame,
    state: FittedState,
    result: ValuationResult,
    member_draws: NDArray[np.int64],
) -> dict[str, NDArray[Any]]:
    """The arrays of a fitted EcoVal, each part under its prefix (``game_``, ``state_``, ``result_``).

    ``result`` is the members' (the reference rows'), so the state is O(R d + p^2) whatever n.
    """
    return {
        "classes": classes,
        "member_draws": member_draws,
        **stage0_arrays(space, model),
        **{f"game_{k}": v for k, v in asdict(game).items() if isinstance(v, np.ndarray)},
        **{f"state_{k}": v for k, v in state.__dict__.items() if isinstance(v, np.ndarray)},
        **{f"result_{k}": v for k, v in result.__dict__.items() if isinstance(v, np.ndarray)},
    }


def fitted_from_arrays(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`fitted_arrays`, with the scalars of ``meta``.

    Returns:
        The fitted parts by name: classes, space, model, game, state, result, member_draws.
    """

    def take(prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    space, model = stage0_from_arrays(arrays)
    return {
        "classes": arrays["classes"],
        "space": space,
        "model": model,
        "game": ClusterGame(**take("game_"), **meta["game"]),
        "state": PropagationState(**take("state_"), **meta["state"]),
        "result": ValuationResult(
            **take("result_"), mode="in_sample", n_trainings=int(meta["n_trainings"]), n_classes=arrays["classes"].size
        ),
        "member_draws": arrays["member_draws"],
    }
