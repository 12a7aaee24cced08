"""Noise models of the experiments: Gaussian on the data, Poisson photon counts pre-log.

`GaussianNoise` (the ellipse experiment: white noise of 5 % of the mean absolute
data), `PoissonNoise` (the human experiment: photon counts of the pre-log model
``y = Poisson(N0 exp(-mu A x)) / N0``, and its post-log transform) and
`noise_model`, which builds one from a `lpd.config.NoiseConfig`. They act on
numpy arrays; `lpd.data.pipelines.simulate` applies them to projected images.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (the noise of both experiments).
"""

from __future__ import annotations

import math

import numpy as np

from lpd.config import NoiseConfig

__all__ = ["GaussianNoise", "PoissonNoise", "noise_model"]


def _as_float_array(values, what: str) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{what} must be a real numeric array, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _generator(rng, fallback: np.random.Generator) -> np.random.Generator:
    if rng is None:
        return fallback
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


class GaussianNoise:
    """Additive white Gaussian noise, relative to the mean absolute data or absolute.

    Each sample of a batch gets noise of standard deviation
    ``relative_std * mean(|y|) + std``, the mean taken over that sample. The
    ellipse experiment has 5 % relative noise on the normalised data
    ``A x / ||A||`` (`input` is ``"operator"``); the MRI experiment an absolute
    ``std`` on the measured Fourier coefficients only (``support``).

    Parameters
    ----------
    relative_std : float
        Noise level relative to the mean absolute data.
    seed : int, optional
        Seed of the generator used when a call gets no ``rng``.
    std : float
        Absolute standard deviation, added to the relative one.
    support : array-like, optional
        1 where the data are measured and 0 elsewhere (shape of one sample):
        noise is added on the support only.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-A.
    """

    kind = "gaussian"
    input = "operator"

    def __init__(self, relative_std: float = 0.05, seed: int | None = None, std: float = 0.0,
                 support=None):
        if not (math.isfinite(relative_std) and relative_std >= 0):
            raise ValueError(f"relative_std must be finite and >= 0, got {relative_std}")
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be finite and >= 0, got {std}")
        self.relative_std = float(relative_std)
        self.std = float(std)
        self.support = None if support is None else np.asarray(support, dtype=np.float64)
        self._rng = np.random.default_rng(seed)

    def __call__(self, data, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return noisy ``data`` of shape ``(batch, ...)`` as float32.

        Parameters
        ----------
        data : array-like
            Noise-free data; the first axis is the batch axis.
        rng : numpy.random.Generator, optional
            Source of the noise; the object's own seeded generator by default.

        Raises
        ------
        ValueError
            For data with NaN or infinite values, or without a batch axis.
        """
        data = _as_float_array(data, "data")
        if data.ndim < 2:
            raise ValueError(f"expected data of shape (batch, ...), got {data.shape}")
        rng = _generator(rng, self._rng)
        if self.support is not None and data.shape[1:] != self.support.shape:
            raise ValueError(f"expected data of shape (batch, {self.support.shape}), "
                             f"got {data.shape}")
        axes = tuple(range(1, data.ndim))
        std = self.relative_std * np.mean(np.abs(data), axis=axes, keepdims=True) + self.std
        noise = std * rng.standard_normal(data.shape)
        if self.support is not None:
            noise *= self.support
        return (data + noise).astype(np.float32)

    def __repr__(self) -> str:
        extra = f", std={self.std}" if self.std else ""
        if self.support is not None:
            extra += f", support of {int(self.support.sum())} / {self.support.size}"
        return f"GaussianNoise(relative_std={self.relative_std}{extra})"


class PoissonNoise:
    """Photon noise on the pre-log model ``y = Poisson(N0 exp(-mu A x)) / N0``.

    `input` is ``"ray_trafo"``: the model takes the line integrals ``A x`` of the
    unnormalised ray transform. The result is the measured fraction of photons,
    1 for an unattenuated ray; a ray that no photon reaches gives 0, which the
    pre-log model handles as it is and `post_log` clamps.

    Parameters
    ----------
    mu : float
        Attenuation scaling per unit length of the geometry (0.02 per mm in the
        human experiment: the attenuation of water, for images relative to water).
    photons : float
        Mean photon count ``N0`` of an unattenuated ray (1e4 in the paper).
    seed : int, optional
        Seed of the generator used when a call gets no ``rng``.

    References
    ----------
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV-B.
    """

    kind = "poisson"
    input = "ray_trafo"

    def __init__(self, mu: float = 0.02, photons: float = 1e4, seed: int | None = None):
        if not (math.isfinite(mu) and mu > 0 and math.isfinite(photons) and photons > 0):
            raise ValueError(f"mu and photons must be finite and > 0, got {mu}, {photons}")
        self.mu = float(mu)
        self.photons = float(photons)
        self._rng = np.random.default_rng(seed)

    def expected(self, line_integrals) -> np.ndarray:
        """The noise-free pre-log data ``exp(-mu * A x)`` as float32."""
        line_integrals = _as_float_array(line_integrals, "line integrals")
        return np.exp(-self.mu * line_integrals).astype(np.float32)

    def __call__(self, line_integrals, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return ``Poisson(photons * exp(-mu * line_integrals)) / photons`` as float32.

        Raises
        ------
        ValueError
            For line integrals with NaN or infinite values, or so negative that
            the expected counts overflow.
        """
        line_integrals = _as_float_array(line_integrals, "line integrals")
        rng = _generator(rng, self._rng)
        with np.errstate(over="ignore"):
            lam = self.photons * np.exp(-self.mu * line_integrals)
        # numpy's Poisson sampler refuses rates above about 1e19.
        if not np.all(lam < 1e18):
            raise ValueError(
                "expected photon counts overflow: the line integrals are too negative "
                f"(min {line_integrals.min():.3g}) for mu={self.mu}"
            )
        return (rng.poisson(lam) / self.photons).astype(np.float32)

    def post_log(self, y, min_photons: float = 1.0) -> np.ndarray:
        """Post-log data ``-log(max(y, min_photons / photons)) / mu`` as float32.

        Rays with zero counts are clamped to ``min_photons`` photons (1, as the
        original post-log variant did; LoDoPaB-CT used 0.1), so the result is finite.

        Raises
        ------
        ValueError
            For NaN or infinite values, or negative counts.
        """
        # float32 throughout: the reconstructors and the pipelines give the same bits.
        y = _as_float_array(y, "pre-log data").astype(np.float32)
        if np.any(y < 0):
            raise ValueError(f"pre-log data must be >= 0 (photon fractions), min is {y.min()}")
        if not min_photons > 0:
            raise ValueError(f"min_photons must be > 0, got {min_photons}")
        floor = min_photons / self.photons
        return (-np.log(np.maximum(y, floor)) / self.mu).astype(np.float32)

    def __repr__(self) -> str:
        return f"PoissonNoise(mu={self.mu}, photons={self.photons:g})"


def noise_model(config: NoiseConfig, seed: int | None = None,
                support=None) -> GaussianNoise | PoissonNoise:
    """Build the noise model described by ``config`` (e.g. ``setup.config.noise``).

    ``support`` (Gaussian noise only) is 1 on the entries of the data that are
    measured and 0 elsewhere, e.g. the sampled coefficients of an MRI mask
    (`lpd.physics.fourier.MaskedFourierTransform.support`); noise is added on
    the support only.
    """
    if not isinstance(config, NoiseConfig):
        raise TypeError(f"expected a NoiseConfig, got {type(config).__name__}")
    if config.kind == "gaussian":
        return GaussianNoise(config.relative_std, seed=seed, std=config.std, support=support)
    return PoissonNoise(config.mu, config.photons, seed=seed)
