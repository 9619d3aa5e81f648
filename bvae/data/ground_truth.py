"""The ground-truth data interface that metrics and traversals use (disentanglement_lib's idea).

A dataset with known generative factors exposes their names and sizes, draws factor
configurations, and renders the observation of any configuration. :class:`FactorGridData`
implements it for any complete factorial grid stored in row-major order, which is what
dSprites is; tests build small synthetic grids with the same class.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from bvae.data import factors


@runtime_checkable
class GroundTruthData(Protocol):
    """What a disentanglement metric needs to know about a dataset."""

    @property
    def factor_names(self) -> tuple[str, ...]: ...

    @property
    def factor_sizes(self) -> tuple[int, ...]: ...

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """``(num, num_factors)`` int64 factor classes drawn uniformly and independently."""
        ...

    def sample_observations_from_factors(
        self, factor_classes: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The observations of ``(num, num_factors)`` factor classes."""
        ...


class FactorGridData:
    """Observations of a complete factorial grid, stored in row-major order of the factors.

    ``images[np.ravel_multi_index(classes.T, all_sizes)]`` is the image of ``classes``.
    Factors of size 1 (dSprites' colour) are hidden from the interface, as the metrics of the
    field only use the factors that vary.
    """

    def __init__(
        self,
        images: np.ndarray,
        all_factor_names: tuple[str, ...],
        all_factor_sizes: tuple[int, ...],
    ):
        if len(all_factor_names) != len(all_factor_sizes):
            raise ValueError("one name per factor size")
        if len(images) != int(np.prod(all_factor_sizes)):
            raise ValueError(
                f"{len(images)} images cannot be the full grid of factor sizes {all_factor_sizes} "
                f"({int(np.prod(all_factor_sizes))} images)"
            )
        self.images = images
        self.all_factor_sizes = tuple(int(size) for size in all_factor_sizes)
        self.all_factor_names = tuple(all_factor_names)
        self.varying_indices = tuple(k for k, size in enumerate(self.all_factor_sizes) if size > 1)

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(self.all_factor_names[k] for k in self.varying_indices)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(self.all_factor_sizes[k] for k in self.varying_indices)

    @property
    def num_factors(self) -> int:
        return len(self.varying_indices)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        columns = [rng.integers(0, size, size=num) for size in self.factor_sizes]
        return np.stack(columns, axis=-1).astype(np.int64)

    def _full_classes(self, factor_classes: np.ndarray) -> np.ndarray:
        factor_classes = np.asarray(factor_classes, dtype=np.int64)
        if factor_classes.ndim != 2 or factor_classes.shape[1] != self.num_factors:
            raise ValueError(f"factor classes must be (n, {self.num_factors}), got {factor_classes.shape}")
        full = np.zeros((len(factor_classes), len(self.all_factor_sizes)), dtype=np.int64)
        full[:, list(self.varying_indices)] = factor_classes
        return full

    def index_from_factors(self, factor_classes: np.ndarray) -> np.ndarray:
        """Flat dataset indices of ``(n, num_factors)`` factor classes (raises if out of range)."""
        return np.ravel_multi_index(tuple(self._full_classes(factor_classes).T), self.all_factor_sizes)

    def factors_from_index(self, index: np.ndarray) -> np.ndarray:
        """``(n, num_factors)`` factor classes of flat dataset indices."""
        full = np.stack(np.unravel_index(np.asarray(index), self.all_factor_sizes), axis=-1)
        return full[..., list(self.varying_indices)].astype(np.int64)

    def sample_observations_from_factors(
        self, factor_classes: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        # The grid holds one image per configuration, so rng is unused; the signature keeps
        # datasets with several observations per configuration interchangeable.
        return self.images[self.index_from_factors(factor_classes)]

    def sample(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``num`` factor configurations and their observations."""
        factor_classes = self.sample_factors(num, rng)
        return factor_classes, self.sample_observations_from_factors(factor_classes, rng)


class DSprites(FactorGridData):
    """dSprites as ground-truth data: 5 varying factors (shape, scale, orientation, posX, posY)."""

    def __init__(self, images: np.ndarray):
        super().__init__(images, factors.FACTOR_NAMES, factors.FACTOR_SIZES)

    @classmethod
    def from_shards(cls, shard_dir: str | os.PathLike = "data/shards", *, verify: bool = True) -> DSprites:
        from bvae.data.shards import load_dataset

        return cls(load_dataset(shard_dir, verify=verify).images)
