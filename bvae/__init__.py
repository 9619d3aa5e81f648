"""bvae: disentangled representations of dSprites with beta-VAEs.

The core (``bvae.data``, and later the models, objectives and metrics) is plain NumPy/PyTorch
that a notebook can import; the stages (``bvae.stages``) and the CLI put files, MLflow and the
network around it.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(reference):
    """A trained β-VAE from ``models:/NAME@ALIAS``, ``NAME/VERSION``, a pulled folder or a file.

    >>> model = bvae.load("models:/bvae-dsprites@champion")   # doctest: +SKIP
    """
    from bvae.consume import load as load_reference

    return load_reference(reference)
