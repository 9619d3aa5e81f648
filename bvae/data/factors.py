"""The dSprites factor grid (Matthey et al. 2017), as numbers.

737,280 images in row-major order of the factor classes, posY varying fastest, so an image's
flat index is ``np.ravel_multi_index(classes.T, FACTOR_SIZES)``. Values follow the official
file's ``latents_possible_values`` (see ../shared/DSPRITES.md).
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES: tuple[str, ...] = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (1, 3, 6, 40, 32, 32)
NUM_IMAGES: int = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE: int = 64
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")

# Colour is constant, so the metrics of the field use the other five factors.
VARYING_FACTOR_INDICES: tuple[int, ...] = (1, 2, 3, 4, 5)


def factor_values() -> dict[str, np.ndarray]:
    """The possible value of every class of every factor (float64, as in the official file)."""
    return {
        "color": np.array([1.0]),
        "shape": np.array([1.0, 2.0, 3.0]),
        "scale": np.linspace(0.5, 1.0, 6),
        # 40 orientations over [0, 2π] inclusive: class 39 is 2π and renders like class 0.
        "orientation": np.linspace(0.0, 2.0 * np.pi, 40),
        "posX": np.linspace(0.0, 1.0, 32),
        "posY": np.linspace(0.0, 1.0, 32),
    }


def index_from_classes(classes: np.ndarray) -> np.ndarray:
    """Flat image indices of an ``(n, 6)`` array of factor classes."""
    classes = np.asarray(classes)
    if classes.ndim != 2 or classes.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"classes must have shape (n, 6), got {classes.shape}")
    return np.ravel_multi_index(tuple(classes.T), FACTOR_SIZES)


def classes_from_index(index: np.ndarray) -> np.ndarray:
    """The ``(n, 6)`` int64 factor classes of flat image indices."""
    index = np.asarray(index)
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=-1).astype(np.int64)


def all_classes() -> np.ndarray:
    """The ``(737280, 6)`` int64 class table in dataset order (``latents_classes``)."""
    return classes_from_index(np.arange(NUM_IMAGES))


def values_from_classes(classes: np.ndarray) -> np.ndarray:
    """The float64 factor values (``latents_values``) of an ``(n, 6)`` class array."""
    classes = np.asarray(classes)
    table = factor_values()
    columns = [table[name][classes[:, k]] for k, name in enumerate(FACTOR_NAMES)]
    return np.stack(columns, axis=-1)


def metadata() -> dict:
    """The official file's ``metadata`` dict, as plain JSON-ready data."""
    return {
        "title": "dSprites dataset",
        "description": (
            "Procedurally generated 2D shapes, from 6 disentangled latent factors. "
            "This dataset uses 6 latents, controlling the color, shape, scale, rotation "
            "and position of a sprite. All possible variations of the latents are present. "
            "Ordering along dimension 1 is fixed and can be mapped back to the exact latent "
            "values that generated that image. Pixel outputs are different. No noise added."
        ),
        "version": 1,
        "latents_names": list(FACTOR_NAMES),
        "latents_possible_values": {k: v.tolist() for k, v in factor_values().items()},
        "latents_sizes": list(FACTOR_SIZES),
        "author": "lmatthey@google.com",
        "date": "April 2017",
    }
