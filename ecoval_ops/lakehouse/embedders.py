"""Embedders: from a batch of source rows to ``(n, d)`` float embeddings (architecture.md, step 2).

One implementation per embedder serves both engines: the delta-rs engine calls ``embed`` on
Arrow batches in-process, the Spark engine inside ``mapInPandas`` on each executor.

- :class:`FeaturesEmbedder` (``features``): the numeric feature columns as float64 (EcoVal
  standardises them);
- :class:`TorchvisionEmbedder` (``torchvision:<model>``): a torchvision architecture with weights
  from a local file, its classification head removed, over image bytes (PNG, JPEG, ...) or pixel
  arrays (square greyscale or RGB).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Embedder", "FeaturesEmbedder", "TorchvisionEmbedder"]

IMAGE_SIZE = 224
"""Images are resized to this square before the network (torchvision's ImageNet size)."""
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class Embedder(Protocol):
    """Turns source rows into embeddings."""

    columns: tuple[str, ...]

    def embed(self, batch: pd.DataFrame) -> NDArray[np.float64]:
        """``(len(batch), d)`` embeddings of the rows of ``batch`` (it holds ``columns``)."""
        ...

    def fingerprint(self) -> str:
        """A short digest that changes when the embedding of a row would change."""
        ...


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class FeaturesEmbedder:
    """Numeric feature columns as the embedding.

    Args:
        columns: the feature columns.
    """

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns

    def embed(self, batch: pd.DataFrame) -> NDArray[np.float64]:
        """See :class:`Embedder`; nulls become NaN (the read checks name them)."""
        try:
            return np.asarray(batch[list(self.columns)].to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"feature columns {list(self.columns)} must be numeric: {e}") from e

    def fingerprint(self) -> str:
        """See :class:`Embedder`."""
        return _digest({"embedder": "features", "columns": list(self.columns)})


class TorchvisionEmbedder:
    """A torchvision network without its classification head, on images.

    The architecture comes from ``torchvision.models.get_model(name, weights=None)``; the
    weights from ``weights``, a local ``state_dict`` file loaded with ``weights_only=True`` (no
    code runs from it, and nothing is downloaded). The penultimate features (the input of the
    final linear layer) are the embedding.

    Args:
        name: a torchvision classification model, for example ``resnet18``.
        weights: path of its ``state_dict``.
        column: the image column: bytes of an encoded image, or a flat pixel array of a
            square greyscale (``s*s``) or RGB (``3*s*s``, channel-last) image.
        device: ``cpu`` or ``cuda``. Default ``cpu``.
        batch_size: images per forward pass. Default 64.
    """

    def __init__(self, name: str, weights: Path, column: str, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.name = name
        self.weights = weights
        self.columns: tuple[str, ...] = (column,)
        self.device = device
        self.batch_size = batch_size
        self._network: Any = None

    def fingerprint(self) -> str:
        """See :class:`Embedder`: the model name and a digest of the weights file."""
        try:
            weights_digest = hashlib.sha256(Path(self.weights).read_bytes()).hexdigest()
        except OSError as e:
            raise InvalidInputError(f"weights file {self.weights} cannot be read: {e}") from e
        return _digest({"embedder": f"torchvision:{self.name}", "weights": weights_digest, "size": IMAGE_SIZE})

    def _load(self) -> Any:
        if self._network is not None:
            return self._network
        import torch
        import torchvision

        try:
            network = torchvision.models.get_model(self.name, weights=None)
        except ValueError as e:
            raise InvalidInputError(f"torchvision has no model {self.name!r}") from e
        try:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except (OSError, RuntimeError, ValueError) as e:
            raise InvalidInputError(f"weights {self.weights} do not fit torchvision:{self.name}: {e}") from e
        _drop_head(network)
        self._network = network.eval().to(self.device)
        return self._network

    def embed(self, batch: pd.DataFrame) -> NDArray[np.float64]:
        """See :class:`Embedder`."""
        import torch

        network = self._load()
        images = [_to_image(v, i) for i, v in enumerate(batch[self.columns[0]])]
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = torch.stack([_preprocess(img) for img in images[start : start + self.batch_size]])
                out.append(network(x.to(self.device)).flatten(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def _drop_head(network: Any) -> None:
    """Replace the last ``Linear`` layer (the classifier) with the identity."""
    import torch

    last = None
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = name
    if last is None:
        raise InvalidInputError(f"{type(network).__name__} has no linear classification head to remove")
    parent = network
    *path, leaf = last.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, torch.nn.Identity())


def _to_image(value: Any, row: int) -> NDArray[np.float32]:
    """``(3, s, s)`` float image in [0, 1] from encoded bytes or a flat pixel array."""
    if value is None:
        raise InvalidInputError(f"image {row} of the batch is null")
    if isinstance(value, (bytes, bytearray, memoryview)):
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            rgb = np.asarray(Image.open(io.BytesIO(bytes(value))).convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidInputError(f"image {row} of the batch is not a readable image: {e}") from e
        return rgb.transpose(2, 0, 1)
    pixels = np.asarray(value, dtype=np.float32)
    side = math.isqrt(pixels.size)
    if side * side == pixels.size:
        grey = pixels.reshape(side, side)
        image = np.stack([grey] * 3)
    elif pixels.size % 3 == 0 and math.isqrt(pixels.size // 3) ** 2 * 3 == pixels.size:
        side = math.isqrt(pixels.size // 3)
        image = pixels.reshape(side, side, 3).transpose(2, 0, 1)
    else:
        raise InvalidInputError(f"image {row} has {pixels.size} pixels: not a square greyscale or RGB image")
    top = float(image.max()) if image.size else 0.0
    return image / top if top > 1.0 else image


def _preprocess(image: NDArray[np.float32]) -> Any:
    import torch
    from torch.nn import functional

    x = torch.as_tensor(image)[None]
    x = functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[0]
    mean = torch.tensor(_MEAN)[:, None, None]
    std = torch.tensor(_STD)[:, None, None]
    return (x - mean) / std
