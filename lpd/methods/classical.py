"""Classical reconstructions: FBP, zero filling, TV by PDHG and Tikhonov by CGLS, and their tuning.

Every method is a *reconstructor*: a callable that maps one data array (numpy,
shape ``setup.operator.range.shape``) to one image (numpy float32, shape
``setup.space.shape``), with ``key``, ``name`` and ``params`` for the results
table. The same evaluation scores them and the learned methods
(`lpd.evaluation.evaluate`).

Data conventions, by the noise model of the set-up (``setup.config.noise``):

``"gaussian"`` (ellipses)
    Data of the experiment's forward operator ``setup.operator``, which is
    ``A / ||A||`` when ``config.normalize`` is set. FBP is the FBP of ``A``
    applied to ``||A||`` times the data, so that noise-free data give the image.
``"poisson"`` (human)
    Pre-log photon fractions ``y = Poisson(N0 exp(-mu A x)) / N0`` in ``[0, inf)``
    (mostly ``(0, 1]``). FBP and Tikhonov work on the post-log line integrals
    ``-log(max(y, 1 / N0)) / mu``; TV fits the pre-log data with the Poisson
    likelihood (Kullback-Leibler divergence) of the non-linear model, as the
    original did. With ``post_log=True`` a reconstructor takes post-log data
    instead (TV then maps them back with ``y = exp(-mu p)``).

The variational problems are written with plain sums over pixels and detector
bins (no cell volumes), so that their weights do not depend on ODL's weightings:

- TV: ``min_x D(A x) + weight * sum_ij |(D x)_ij|_2 (+ indicator of x >= 0)``,
  where ``D`` is forward differences between neighbouring pixels (zero at the
  last row and column) and ``D(p) = 0.5 * sum (p - y)^2`` for Gaussian noise or
  ``D(p) = KL(y, exp(-mu p)) = sum exp(-mu p) - y + y log y + mu y p`` for Poisson
  noise. Solved by PDHG (Chambolle-Pock) with ``K = [A / a; D / b]``, the blocks
  scaled by their norms ``a = ||A||`` and ``b = ||D||`` (a diagonal
  preconditioning), and steps with ``tau * sigma * ||K||^2 = 1 / 1.05^2``,
  ``||K||`` from the power method on the stacked operator.
- Tikhonov: ``min_x ||A x - y||^2 + weight * ||x||^2`` by CGLS (conjugate
  gradients on the normal equations); ``weight = 0`` gives the minimum-norm
  least-squares solution (CGLS started at 0), regularised by its iteration count.

Parameter selection: `grid_search` and `golden_section_search` maximise the mean
PSNR on validation data; the chosen values live as `ClassicalParams` in
``data/classical/<setup>.json`` together with the search that produced them
(``tools/tune_classical.py`` reruns it).

This module uses numpy, scipy and ODL only; it never imports TensorFlow.

References
----------
Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 37(6), 2018,
arXiv:1707.06474, section IV (the FBP and TV baselines).
Chambolle A, Pock T. A first-order primal-dual algorithm for convex problems
with applications to imaging. J Math Imaging Vis 40, 2011 (Algorithm 1).
Hestenes MR, Stiefel E. Methods of conjugate gradients for solving linear
systems. J Res NBS 49(6), 1952 (CGLS).
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.io import atomic_write, read_record, shipped
from lpd.physics import operators
from lpd.physics.projector import power_norm, projector

__all__ = [
    "FILTERS",
    "Reconstructor",
    "FBPReconstructor",
    "ZeroFillingReconstructor",
    "analytical",
    "TVReconstructor",
    "TikhonovReconstructor",
    "ClassicalParams",
    "SearchResult",
    "grid_search",
    "golden_section_search",
    "mean_psnr",
    "params_path",
    "load_params",
    "save_params",
    "gradient",
    "gradient_transpose",
    "gradient_norm",
]

FILTERS = ("Ram-Lak", "Shepp-Logan", "Cosine", "Hamming", "Hann")
"""Windows of the FBP ramp filter, from most to least noise sensitive (ODL's)."""

# Safety factor on the power-method estimate of ||K||: the estimate converges
# from below, and tau * sigma * ||K||^2 < 1 must hold for the true norm.
_NORM_MARGIN = 1.05


def _filter_name(filter_type: str) -> str:
    for name in FILTERS:
        if str(filter_type).lower() == name.lower():
            return name
    raise ValueError(f"unknown FBP filter {filter_type!r}; choose one of {', '.join(FILTERS)}")


# ---------------------------------------------------------------------------
# Linear maps on numpy arrays
# ---------------------------------------------------------------------------

def gradient(x: np.ndarray) -> np.ndarray:
    """Forward differences of an image, shape ``(2, *x.shape)``.

    ``g[0, i, j] = x[i + 1, j] - x[i, j]`` and ``g[1, i, j] = x[i, j + 1] - x[i, j]``,
    zero in the last row (column): the discrete gradient of isotropic TV with
    Neumann boundary conditions, in units of pixel differences.

    References
    ----------
    Chambolle A. An algorithm for total variation minimization and applications.
    J Math Imaging Vis 20, 2004, equation (2.1).
    """
    x = np.asarray(x)
    g = np.zeros((2, *x.shape), dtype=x.dtype)
    g[0, :-1] = x[1:] - x[:-1]
    g[1, :, :-1] = x[:, 1:] - x[:, :-1]
    return g


def gradient_transpose(g: np.ndarray) -> np.ndarray:
    """The transpose of `gradient` (minus the discrete divergence)."""
    g = np.asarray(g)
    out = np.zeros(g.shape[1:], dtype=g.dtype)
    out[:-1] -= g[0, :-1]
    out[1:] += g[0, :-1]
    out[:, :-1] -= g[1, :, :-1]
    out[:, 1:] += g[1, :, :-1]
    return out


def gradient_norm(shape: tuple[int, int]) -> float:
    """The exact operator norm of `gradient` on images of ``shape``.

    ``D^T D`` is the Neumann Laplacian, whose largest eigenvalue is
    ``4 sin^2(pi (n - 1) / (2 n))`` per axis; the norm is below ``sqrt(8)``.
    """
    return math.sqrt(sum(4 * math.sin(math.pi * (n - 1) / (2 * n)) ** 2 for n in shape))


# ---------------------------------------------------------------------------
# Data terms of the variational methods
# ---------------------------------------------------------------------------

def _lambertw_exp(log_arg: np.ndarray) -> np.ndarray:
    """Principal Lambert W of ``exp(log_arg)``, without forming the exponential.

    Solves ``w + log(w) = log_arg`` by Newton's method, which on this concave
    increasing function approaches the root monotonically after the first step.
    """
    log_arg = np.asarray(log_arg, dtype=np.float64)
    tiny = np.finfo(np.float64).tiny
    with np.errstate(over="ignore"):
        small = np.log1p(np.exp(np.minimum(log_arg, 1.0)))
    large = log_arg - np.log(np.maximum(log_arg, 1.0))
    w = np.maximum(np.where(log_arg > 1.0, large, small), tiny)
    for _ in range(8):
        w = np.maximum(w * (1.0 + log_arg - np.log(w)) / (1.0 + w), tiny)
    return w


class _LeastSquares:
    """``D(p) = 0.5 * sum (p - y)^2``: the log-likelihood of white Gaussian noise."""

    def __init__(self, y: np.ndarray):
        self.y = y.astype(np.float32)

    def value(self, p: np.ndarray) -> float:
        return 0.5 * float(np.sum((p.astype(np.float64) - self.y) ** 2))

    def prox(self, v: np.ndarray, t: float) -> np.ndarray:
        return ((v + t * self.y) / (1.0 + t)).astype(np.float32)


class _PoissonKL:
    """``D(p) = KL(y, exp(-mu p))``: the Poisson log-likelihood of pre-log data.

    With ``q = exp(-mu p)`` the expected photon fraction of the line integral ``p``,
    ``D(p) = sum q - y + y log(y / q) = sum exp(-mu p) + mu y p + const``, which is
    convex in ``p``: TV with this term is a convex problem with the linear
    operator ``A`` (the non-linearity sits in ``D``), so PDHG converges.
    """

    def __init__(self, y: np.ndarray, mu: float):
        self.y = y.astype(np.float64)
        self.mu = float(mu)
        y = self.y
        self._const = float(np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
                                   - y))

    def value(self, p: np.ndarray) -> float:
        p = p.astype(np.float64)
        return float(np.sum(np.exp(-self.mu * p) + self.mu * self.y * p)) + self._const

    def prox(self, v: np.ndarray, t: float) -> np.ndarray:
        # argmin_p t (exp(-mu p) + mu y p) + (p - v)^2 / 2 solves
        # p = u + t mu exp(-mu p) with u = v - t mu y, i.e.
        # p = u + W(t mu^2 exp(-mu u)) / mu.
        mu = self.mu
        u = v.astype(np.float64) - t * mu * self.y
        w = _lambertw_exp(math.log(t * mu * mu) - mu * u)
        return (u + w / mu).astype(np.float32)


# ---------------------------------------------------------------------------
# Reconstructors
# ---------------------------------------------------------------------------

class Reconstructor(abc.ABC):
    """Base of the classical reconstructors: one data array in, one image out.

    Subclasses set `key` and `name` and implement ``_reconstruct``; calling a
    reconstructor checks the data first (`check_data`).

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
        The problem (or its name).
    post_log : bool
        Poisson set-ups only: the data are post-log line integrals
        ``-log(y) / mu`` instead of the pre-log photon fractions ``y``.
    """

    key: str = ""
    name: str = ""

    def __init__(self, setup, *, post_log: bool = False):
        self.setup = operators.as_setup(setup)
        self.noise = self.setup.config.noise
        self.post_log = bool(post_log)
        self._data_model = self.setup.data_model(self.post_log)
        self.data_shape = tuple(self.setup.operator.range.shape)
        self.image_shape = tuple(self.setup.space.shape)

    @property
    def data_model(self) -> str:
        """``"linear"`` (Gaussian), ``"prelog"`` or ``"postlog"`` (Poisson set-ups)."""
        return self._data_model

    @property
    def params(self) -> dict:
        """The method's settings, for the results table."""
        return {"data_model": self.data_model}

    def check_data(self, data) -> np.ndarray:
        """Return ``data`` as float32 after checking shape and values.

        Raises
        ------
        ValueError
            For data of the wrong shape, with NaN or infinite values, or (pre-log
            data) with negative photon counts.
        """
        data = np.asarray(data)
        if data.shape != self.data_shape:
            hint = ""
            if data.ndim == len(self.data_shape) + 1 and data.shape[1:] == self.data_shape:
                hint = " (a batch? reconstructors take one sample at a time)"
            elif data.shape[-1:] == (1,) and data.shape[:-1] == self.data_shape:
                hint = " (drop the trailing channel axis)"
            raise ValueError(f"{self.name}: expected data of shape {self.data_shape} for set-up "
                             f"{self.setup.config.name!r}, got {data.shape}{hint}")
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise ValueError(f"{self.name}: expected real numbers, got dtype {data.dtype}")
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise ValueError(f"{self.name}: data contain {bad} NaN or infinite values")
        if self.data_model == "prelog" and np.any(data < 0):
            raise ValueError(f"{self.name}: pre-log data are photon fractions and must be >= 0; "
                             f"got {int(np.sum(data < 0))} negative values (min {data.min():.3g})")
        return data

    def line_integrals(self, data: np.ndarray) -> np.ndarray:
        """Post-log data of a Poisson set-up: ``-log(max(y, 1 / N0)) / mu`` (`Setup.post_log`).

        Rays that no photon reached are clamped to one photon, as the original did,
        so the result is finite.
        """
        if self.data_model != "prelog":
            return data
        return self.setup.post_log(data)

    def __call__(self, data) -> np.ndarray:
        """Reconstruct one image from one data array (see `check_data`)."""
        return self._reconstruct(self.check_data(data))

    @abc.abstractmethod
    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        """Reconstruct one checked data array (what each method implements)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.setup.config.name!r}, {settings})"


class FBPReconstructor(Reconstructor):
    """Filtered back-projection, parallel or fan beam (ODL's `fbp_op`).

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
        The problem.
    filter_type : str
        Window of the ramp filter, one of `FILTERS` (any case).
    frequency_scaling : float
        Relative cut-off in ``(0, 1]``: frequencies above it are set to zero and
        the window is stretched to end there.
    padding : bool
        Zero-pad the sinogram before filtering (avoids wrap-around).
    post_log : bool
        See `Reconstructor`.

    Notes
    -----
    For a normalised set-up the data are those of ``A / ||A||``, so the FBP of
    ``A`` is applied to ``||A||`` times the data. For fan beam ODL's FBP is exact
    only in the limit of a zero fan angle; over a full ``2 pi`` scan it weights
    the doubly measured rays by 1/2.

    References
    ----------
    Natterer F. The Mathematics of Computerized Tomography. SIAM 2001, section V.1.
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV (the FBP baseline, Hann filter).
    """

    key = "fbp"
    name = "FBP"

    def __init__(self, setup, filter_type: str = "Hann", frequency_scaling: float = 1.0, *,
                 padding: bool = True, post_log: bool = False):
        super().__init__(setup, post_log=post_log)
        if self.setup.config.modality != "ct":
            raise ValueError(f"FBP needs a ray transform; set-up {self.setup.config.name!r} "
                             f"is {self.setup.config.modality.upper()} (use zero filling, "
                             "ZeroFillingReconstructor)")
        self.filter_type = _filter_name(filter_type)
        frequency_scaling = float(frequency_scaling)
        if not 0 < frequency_scaling <= 1:
            raise ValueError(f"frequency_scaling must be in (0, 1], got {frequency_scaling}")
        self.frequency_scaling = frequency_scaling
        self.padding = bool(padding)
        from odl.applications import tomo

        self._fbp = tomo.fbp_op(self.setup.ray_trafo, padding=self.padding,
                                filter_type=self.filter_type,
                                frequency_scaling=self.frequency_scaling)
        # Gaussian data are those of the experiment's operator (normalised or not);
        # Poisson data are always of the raw line integrals.
        normalised = self.setup.config.normalize and self.noise.kind == "gaussian"
        self._scale = self.setup.opnorm if normalised else 1.0

    @property
    def params(self) -> dict:
        return {"filter_type": self.filter_type, "frequency_scaling": self.frequency_scaling,
                **super().params}

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        data = self.line_integrals(data)
        if self._scale != 1.0:
            data = data * np.float32(self._scale)
        return np.asarray(self._fbp(data).data, dtype=np.float32).copy()


class ZeroFillingReconstructor(Reconstructor):
    """Zero filling (MRI): the inverse Fourier transform of the data, unmeasured coefficients 0.

    The Euclidean transpose ``W^T y = Re(F^H K^T y)`` of the masked unitary
    Fourier transform (`lpd.physics.fourier`): the real part of the zero-filled
    inverse transform. Where the mask holds a frequency and its mirror ``-k``
    it is the minimum-norm least-squares real image; a frequency measured
    without its mirror comes out at half its amplitude, as in the usual
    zero-filling baseline. The analytical reconstruction of MRI, as FBP is of
    CT; it takes no parameters.

    References
    ----------
    Bernstein MA, Fain SB, Riederer SJ. Effect of windowing and zero-filled
    reconstruction of MRI data on spatial resolution and acquisition strategy.
    J Magn Reson Imaging 14(3), 2001 (the ZF baseline of Liu et al., MICCAI 2018).
    """

    key = "zf"
    name = "Zero filling"

    def __init__(self, setup, *, post_log: bool = False):
        super().__init__(setup, post_log=post_log)
        if self.setup.config.modality != "mri":
            raise ValueError(f"zero filling is for MRI set-ups; {self.setup.config.name!r} is "
                             f"{self.setup.config.modality.upper()} (use FBP)")
        self._projector = projector(self.setup.operator)

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        return self._projector.transpose(data)


def analytical(setup, *, post_log: bool = False) -> Reconstructor:
    """The untuned analytical reconstruction of a set-up: Hann FBP (CT) or zero filling (MRI)."""
    if operators.as_setup(setup).config.modality == "mri":
        return ZeroFillingReconstructor(setup, post_log=post_log)
    return FBPReconstructor(setup, "Hann", post_log=post_log)


class TVReconstructor(Reconstructor):
    """Isotropic total-variation regularisation solved by PDHG (Chambolle-Pock).

    Minimises ``D(A x) + weight * TV(x)``, optionally over ``x >= 0``, with the
    data term ``D`` that fits the set-up's noise (least squares for Gaussian
    noise, the Poisson Kullback-Leibler divergence on the pre-log model
    ``exp(-mu A x)`` otherwise; see the module docstring for the exact objective).

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
        The problem.
    weight : float
        Regularisation weight (> 0).
    n_iter : int
        PDHG iterations (1000 in the paper).
    nonneg : bool
        Constrain the image to ``x >= 0``.
    step_ratio : float
        ``tau / sigma`` of the primal and dual steps; it changes the speed of
        convergence, not the solution.
    initial : {"fbp", "zero_filling", "zeros"}, optional
        Starting image: the Hann FBP of the data (CT, as the original), the zero
        filling (MRI) or zeros. By default the set-up's analytical
        reconstruction (`analytical`).
    memory_budget : float
        Largest system matrix, in bytes, used instead of ODL calls.
    post_log : bool
        See `Reconstructor`.

    References
    ----------
    Chambolle A, Pock T. A first-order primal-dual algorithm for convex problems
    with applications to imaging. J Math Imaging Vis 40, 2011, Algorithm 1.
    Sidky EY, Jørgensen JH, Pan X. Convex optimization problem prototyping for
    image reconstruction in computed tomography with the Chambolle-Pock
    algorithm. Phys Med Biol 57, 2012.
    Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE TMI 2018,
    arXiv:1707.06474, section IV (the TV baseline).
    """

    key = "tv"
    name = "TV"

    def __init__(self, setup, weight: float, n_iter: int = 1000, nonneg: bool = False, *,
                 step_ratio: float = 100.0, initial: str | None = None,
                 memory_budget: float = 2**30, post_log: bool = False):
        super().__init__(setup, post_log=post_log)
        if initial is None:
            initial = "zero_filling" if self.setup.config.modality == "mri" else "fbp"
        weight = float(weight)
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {weight}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
        if not (math.isfinite(step_ratio) and step_ratio > 0):
            raise ValueError(f"step_ratio must be finite and > 0, got {step_ratio}")
        if initial not in ("fbp", "zero_filling", "zeros"):
            raise ValueError(f"initial must be 'fbp', 'zero_filling' or 'zeros', got {initial!r}")
        self.weight = weight
        self.n_iter = int(n_iter)
        self.nonneg = bool(nonneg)
        self.step_ratio = float(step_ratio)
        self.initial = initial
        # The linear operator of the data term: the experiment's operator for
        # Gaussian noise, the unnormalised line integrals for the pre-log model.
        op = self.setup.operator if self.noise.kind == "gaussian" else self.setup.ray_trafo
        self._projector = projector(op, memory_budget)
        self._fbp = {"fbp": lambda: FBPReconstructor(self.setup, "Hann", post_log=post_log),
                     "zero_filling": lambda: ZeroFillingReconstructor(self.setup),
                     "zeros": lambda: None}[initial]()
        self._steps: tuple[float, float, float, float] | None = None

    @property
    def params(self) -> dict:
        return {"weight": self.weight, "n_iter": self.n_iter, "nonneg": self.nonneg,
                "step_ratio": self.step_ratio, "initial": self.initial, **super().params}

    def _data_term(self, data: np.ndarray):
        if self.noise.kind == "gaussian":
            return _LeastSquares(data)
        if self.post_log:
            data = np.exp(-self.noise.mu * data.astype(np.float64))
        return _PoissonKL(data, self.noise.mu)

    def step_sizes(self) -> tuple[float, float, float, float]:
        """``(tau, sigma, a, b)``: PDHG steps and the block scalings ``||A||``, ``||D||``.

        ``||K||`` of ``K = [A / a; D / b]`` is estimated by 100 power iterations and
        enlarged by 5 %, so ``tau * sigma * ||K||^2 < 1`` holds for the true norm.
        """
        if self._steps is None:
            a = self._projector.norm()
            b = gradient_norm(self.image_shape)
            proj = self._projector

            def normal(x):
                return (proj.transpose(proj.forward(x)) / np.float32(a * a)
                        + gradient_transpose(gradient(x)) / np.float32(b * b))

            k_norm = _NORM_MARGIN * power_norm(normal, self.image_shape, 100)
            root = math.sqrt(self.step_ratio)
            tau = root / k_norm
            sigma = 1.0 / (root * k_norm)
            self._steps = (tau, sigma, a, b)
        return self._steps

    def objective(self, image, data) -> float:
        """The objective ``D(A x) + weight * TV(x)`` at ``image`` for ``data``.

        Returns ``inf`` for a negative image under the non-negativity constraint.
        """
        data = self.check_data(data)
        image = np.asarray(image, dtype=np.float32)
        if self.nonneg and np.any(image < 0):
            return math.inf
        g = gradient(image).astype(np.float64)
        tv = float(np.sum(np.sqrt(g[0] ** 2 + g[1] ** 2)))
        return self._data_term(data).value(self._projector.forward(image)) + self.weight * tv

    def reconstruct(self, data, callback: Callable[[int, np.ndarray], Any] | None = None, *,
                    anchor=None, anchor_weight: float = 0.0, start=None) -> np.ndarray:
        """Reconstruct, calling ``callback(iteration, image)`` after every iteration.

        ``anchor`` and ``anchor_weight`` add a proximity term
        ``anchor_weight / 2 * ||x - anchor||^2`` to the objective (the data-consistent
        step of a splitting scheme, `lpd.methods.splitting`); ``start`` replaces the
        starting image (a warm start).
        """
        data = self.check_data(data)
        term = self._data_term(data)
        tau, sigma, a, b = self.step_sizes()
        proj = self._projector
        bound = np.float32(self.weight * b)
        rho = float(anchor_weight)
        if rho < 0 or (rho > 0 and anchor is None):
            raise ValueError(f"anchor_weight must be >= 0 and needs an anchor, got {rho}")
        if rho > 0:
            anchor = np.asarray(anchor, dtype=np.float32)
            if anchor.shape != self.image_shape:
                raise ValueError(f"anchor must have shape {self.image_shape}, got {anchor.shape}")
        if start is not None:
            x = np.array(start, dtype=np.float32)
            if x.shape != self.image_shape:
                raise ValueError(f"start must have shape {self.image_shape}, got {x.shape}")
        elif self._fbp is not None:
            x = self._fbp._reconstruct(data)
        else:
            x = np.zeros(self.image_shape, np.float32)
        if self.nonneg:
            x = np.maximum(x, 0)
        x_bar = x.copy()
        dual_data = np.zeros(self.data_shape, np.float32)
        dual_grad = np.zeros((2, *self.image_shape), np.float32)
        for it in range(self.n_iter):
            # Dual step of the data term, g1(q) = D(a q), by Moreau's identity:
            # prox_{s g1*}(v) = v - (s / a) prox_{(a^2 / s) D}(a v / s).
            v = dual_data + np.float32(sigma / a) * proj.forward(x_bar)
            dual_data = v - np.float32(sigma / a) * term.prox(v * np.float32(a / sigma),
                                                              a * a / sigma)
            # Dual step of TV, g2(r) = weight * b * |r|_{2,1}: project onto the
            # pointwise ball of radius weight * b.
            dual_grad += np.float32(sigma / b) * gradient(x_bar)
            dual_grad /= np.maximum(1.0, np.sqrt(dual_grad[0] ** 2 + dual_grad[1] ** 2) / bound)
            x_old = x
            x = x - np.float32(tau) * (proj.transpose(dual_data) / np.float32(a)
                                       + gradient_transpose(dual_grad) / np.float32(b))
            if rho > 0:  # the prox of tau * rho / 2 * ||x - anchor||^2
                x = (x + np.float32(tau * rho) * anchor) / np.float32(1 + tau * rho)
            if self.nonneg:
                x = np.maximum(x, 0)
            x_bar = 2 * x - x_old
            if callback is not None:
                callback(it + 1, x)
        return x.astype(np.float32)

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        return self.reconstruct(data)


class TikhonovReconstructor(Reconstructor):
    """Tikhonov-regularised least squares by CGLS (conjugate gradients, normal equations).

    Minimises ``||A x - y||^2 + weight * ||x||^2`` (plain sums) for the linear
    model of the set-up: the experiment's operator and data for Gaussian noise, the
    unnormalised ray transform and the post-log data for Poisson noise. Starting at
    0, ``weight = 0`` gives the minimum-norm least-squares solution in the limit of
    many iterations; fewer iterations regularise by early stopping.

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
        The problem.
    weight : float
        Regularisation weight (>= 0).
    n_iter : int
        Largest number of CGLS iterations.
    tol : float
        Stop when the residual of the normal equations falls below ``tol`` times
        ``||A^T y||``.
    memory_budget : float
        Largest system matrix, in bytes, used instead of ODL calls.
    post_log : bool
        See `Reconstructor`.

    References
    ----------
    Hestenes MR, Stiefel E. Methods of conjugate gradients for solving linear
    systems. J Res NBS 49(6), 1952, section 10 (CG on the normal equations).
    Engl HW, Hanke M, Neubauer A. Regularization of Inverse Problems. Kluwer
    1996, chapters 5 and 7 (Tikhonov; CGNE as a regularisation).
    """

    key = "tikhonov"
    name = "Tikhonov"

    def __init__(self, setup, weight: float, n_iter: int = 100, *, tol: float = 1e-6,
                 memory_budget: float = 2**30, post_log: bool = False):
        super().__init__(setup, post_log=post_log)
        weight = float(weight)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
        self.weight = weight
        self.n_iter = int(n_iter)
        self.tol = float(tol)
        op = self.setup.operator if self.noise.kind == "gaussian" else self.setup.ray_trafo
        self._projector = projector(op, memory_budget)
        self.iterations_run = 0

    @property
    def params(self) -> dict:
        return {"weight": self.weight, "n_iter": self.n_iter, **super().params}

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        y = self.line_integrals(data).astype(np.float64)
        proj, w = self._projector, self.weight
        x = np.zeros(self.image_shape, np.float64)
        r = y.copy()
        s = proj.transpose(r).astype(np.float64)
        stop = self.tol * float(np.linalg.norm(s))
        p = s.copy()
        gamma = float(np.vdot(s, s))
        self.iterations_run = 0
        for it in range(self.n_iter):
            if math.sqrt(gamma) <= stop:
                break
            q = proj.forward(p).astype(np.float64)
            delta = float(np.vdot(q, q)) + w * float(np.vdot(p, p))
            if delta == 0.0:
                break
            alpha = gamma / delta
            x += alpha * p
            r -= alpha * q
            s = proj.transpose(r).astype(np.float64) - w * x
            gamma, gamma_old = float(np.vdot(s, s)), gamma
            p = s + (gamma / gamma_old) * p
            self.iterations_run = it + 1
        return x.astype(np.float32)




class PseudoInverseReconstructor(TikhonovReconstructor):
    """The Moore-Penrose pseudo-inverse ``A^+ y``: minimum-norm least squares.

    Exactly ``A^+ y = A^T (A A^T)^+ y`` where the operator has a system matrix:
    the Gram matrix ``A A^T`` of the data space is formed once and
    pseudo-inverted by its eigendecomposition (float64; eigenvalues below
    ``rcond`` times the largest count as zero, as in `numpy.linalg.pinv`), so a
    reconstruction is two matrix products. Otherwise CGLS from 0
    (`TikhonovReconstructor` with ``weight = 0``) up to ``n_iter`` iterations.
    It fits the noise: the lecture's unregularised approximate inverse. Its
    noise-aware form ``A^T (A A^T + s I)^{-1} y`` equals ``(A^T A + s I)^{-1} A^T
    y``: that is `TikhonovReconstructor` with ``weight = s``, whose weight lpd
    tunes on validation data.

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
    n_iter, tol
        CGLS iterations and tolerance where there is no matrix (1000, 1e-6).
    rcond : float
        Relative cut-off of the Gram matrix's eigenvalues; by default the data
        size times float64's machine epsilon.
    """

    key = "pinv"
    name = "Pseudo-inverse"

    def __init__(self, setup, n_iter: int = 1000, *, tol: float = 1e-6,
                 rcond: float | None = None, memory_budget: float = 2**30,
                 post_log: bool = False):
        super().__init__(setup, 0.0, n_iter, tol=tol, memory_budget=memory_budget,
                         post_log=post_log)
        size = int(np.prod(self.data_shape))
        self.rcond = float(size * np.finfo(np.float64).eps if rcond is None else rcond)
        self._gram_pinv: np.ndarray | None = None

    @property
    def params(self) -> dict:
        exact = self._projector.matrix is not None
        return {"method": "eigendecomposition of A A^T" if exact else "CGLS",
                **({"rcond": self.rcond} if exact else {"n_iter": self.n_iter, "tol": self.tol}),
                "data_model": self.data_model}

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        proj = self._projector
        if proj.matrix is None:
            return super()._reconstruct(data)
        if self._gram_pinv is None:
            matrix = proj.matrix.astype(np.float64)
            gram = (matrix @ matrix.T).toarray()
            values, vectors = np.linalg.eigh(gram)
            keep = values > self.rcond * values.max()
            self._gram_pinv = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
        y = self.line_integrals(data).astype(np.float64).reshape(-1)
        x = proj.matrix_t @ (self._gram_pinv @ y)
        return x.reshape(self.image_shape).astype(np.float32)


# ---------------------------------------------------------------------------
# Parameter search
# ---------------------------------------------------------------------------

def mean_psnr(reconstructor: Callable[[np.ndarray], np.ndarray], data, truth,
              data_range: float = 1.0) -> float:
    """Mean PSNR of ``reconstructor`` over a validation set (the search criterion)."""
    data, truth = np.asarray(data), np.asarray(truth)
    if len(data) != len(truth) or len(data) == 0:
        raise ValueError(f"need as many data as images (>= 1), got {len(data)} and {len(truth)}")
    return float(np.mean([metrics.psnr(t, reconstructor(d), data_range)
                          for d, t in zip(data, truth, strict=True)]))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The outcome of a parameter search.

    Attributes
    ----------
    best : dict
        The best parameters found (fixed ones included).
    score : float
        Their mean validation PSNR in dB.
    trials : tuple of (dict, float)
        Every evaluated point and its score, in the order evaluated.
    """

    best: dict
    score: float
    trials: tuple

    def to_dict(self) -> dict:
        """JSON-ready form: best, score and the list of trials."""
        return {"best": dict(self.best), "score": self.score,
                "trials": [{"params": dict(p), "psnr": s} for p, s in self.trials]}


def grid_search(build: Callable[..., Callable], grid: Mapping[str, Sequence], data, truth, *,
                fixed: Mapping[str, Any] | None = None, data_range: float = 1.0,
                verbose: bool = False) -> SearchResult:
    """Maximise the mean PSNR over every combination of ``grid``.

    Parameters
    ----------
    build : callable
        ``build(**params) -> reconstructor``, e.g.
        ``functools.partial(FBPReconstructor, setup)``.
    grid : mapping of str to sequence
        Values to try per parameter.
    data, truth : array-like
        Validation data ``(n, *range_shape)`` and images ``(n, *image_shape)``.
    fixed : mapping, optional
        Further keyword arguments of ``build``, the same for every trial.
    data_range : float
        Data range of the PSNR.
    verbose : bool
        Print each trial.

    Returns
    -------
    SearchResult
    """
    fixed = dict(fixed or {})
    names = list(grid)
    trials = []
    for values in itertools.product(*(list(grid[n]) for n in names)):
        params = {**fixed, **dict(zip(names, values, strict=True))}
        score = mean_psnr(build(**params), data, truth, data_range)
        trials.append((params, score))
        if verbose:
            print(f"  {_fmt(params)}: {score:.3f} dB", flush=True)
    if not trials:
        raise ValueError("empty grid")
    best, score = max(trials, key=lambda t: t[1])
    return SearchResult(best=best, score=score, trials=tuple(trials))


def golden_section_search(build: Callable[..., Callable], name: str, lower: float,
                          upper: float, data, truth, *, fixed: Mapping[str, Any] | None = None,
                          log: bool = True, n_eval: int = 14, data_range: float = 1.0,
                          verbose: bool = False) -> SearchResult:
    """Maximise the mean PSNR over one scalar parameter by golden-section search.

    Assumes the PSNR is unimodal in the parameter on ``[lower, upper]`` (true in
    practice for regularisation weights: too small leaves noise, too large blurs).
    Both ends are evaluated too, so that an optimum on the boundary shows in the
    trials.

    Parameters
    ----------
    build : callable
        ``build(**params) -> reconstructor``.
    name : str
        The keyword of ``build`` to search.
    lower, upper : float
        The interval (both > 0 when ``log``).
    data, truth : array-like
        Validation data and images.
    fixed : mapping, optional
        Further keyword arguments of ``build``.
    log : bool
        Search over ``log10`` of the parameter.
    n_eval : int
        Number of interior evaluations; the bracket shrinks by 0.618 per evaluation.
    data_range : float
        Data range of the PSNR.
    verbose : bool
        Print each trial.

    Returns
    -------
    SearchResult

    References
    ----------
    Kiefer J. Sequential minimax search for a maximum. Proc AMS 4(3), 1953.
    """
    if not lower < upper or (log and lower <= 0):
        raise ValueError(f"need 0 < lower < upper (log) or lower < upper, got {lower}, {upper}")
    if n_eval < 2:
        raise ValueError(f"n_eval must be >= 2, got {n_eval}")
    fixed = dict(fixed or {})
    to_x = (lambda v: math.log10(v)) if log else (lambda v: v)
    from_x = (lambda x: 10.0 ** x) if log else (lambda x: x)
    cache: dict[float, float] = {}
    trials = []

    def score(x: float) -> float:
        if x not in cache:
            params = {**fixed, name: from_x(x)}
            cache[x] = mean_psnr(build(**params), data, truth, data_range)
            trials.append((params, cache[x]))
            if verbose:
                print(f"  {_fmt(params)}: {cache[x]:.3f} dB", flush=True)
        return cache[x]

    lo, hi = to_x(lower), to_x(upper)
    score(lo)
    score(hi)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = score(c), score(d)
    for _ in range(n_eval - 2):
        if fc >= fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = score(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = score(d)
    best, best_score = max(trials, key=lambda t: t[1])
    return SearchResult(best=best, score=best_score, trials=tuple(trials))


def _fmt(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


# ---------------------------------------------------------------------------
# Chosen parameters, stored as data
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClassicalParams:
    """The tuned parameters of the classical methods for one set-up.

    Stored with the search that produced them in ``data/classical/<setup>.json``
    (`save_params`, `load_params`); ``tools/tune_classical.py`` reruns the
    search.

    Parameters
    ----------
    setup : str
        Name of the set-up.
    fbp_filter : str
        FBP window (one of `FILTERS`).
    fbp_frequency_scaling : float
        FBP relative cut-off.
    tv_weight : float
        TV regularisation weight.
    tv_n_iter : int
        PDHG iterations.
    tv_nonneg : bool
        Non-negativity constraint of TV.
    tv_step_ratio : float
        PDHG ``tau / sigma``, chosen for the fastest decrease of the objective.
    tikhonov_weight : float
        Tikhonov weight.
    tikhonov_n_iter : int
        Largest number of CGLS iterations.
    """

    setup: str
    fbp_filter: str = "Hann"
    fbp_frequency_scaling: float = 1.0
    tv_weight: float = 1e-2
    tv_n_iter: int = 1000
    tv_nonneg: bool = False
    tv_step_ratio: float = 100.0
    tikhonov_weight: float = 1e-2
    tikhonov_n_iter: int = 100

    def __post_init__(self):
        # Plain Python types, so that values read back from JSON compare equal.
        object.__setattr__(self, "fbp_filter", _filter_name(self.fbp_filter))
        for name in ("fbp_frequency_scaling", "tv_weight", "tv_step_ratio", "tikhonov_weight"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("tv_n_iter", "tikhonov_n_iter"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "tv_nonneg", bool(self.tv_nonneg))

    def reconstructors(self, setup=None) -> dict[str, Reconstructor]:
        """The three reconstructors with these parameters, by key.

        FBP on CT set-ups; on MRI set-ups zero filling (which takes no
        parameters) in its place, and the ``fbp_*`` fields are not used.

        ``setup`` defaults to the named set-up; pass a built one to reuse it.
        """
        setup = operators.as_setup(self.setup if setup is None else setup)
        analytical_method = (ZeroFillingReconstructor(setup)
                             if setup.config.modality == "mri" else
                             FBPReconstructor(setup, self.fbp_filter, self.fbp_frequency_scaling))
        return {
            analytical_method.key: analytical_method,
            "tv": TVReconstructor(setup, self.tv_weight, self.tv_n_iter, self.tv_nonneg,
                                  step_ratio=self.tv_step_ratio),
            "tikhonov": TikhonovReconstructor(setup, self.tikhonov_weight,
                                              self.tikhonov_n_iter),
        }


def params_path(setup: str) -> Path:
    """``data/classical/<setup>.json`` beside the package, where tuned values ship."""
    return shipped("classical", f"{setup}.json")


def load_params(setup: str, path: str | os.PathLike | None = None) -> ClassicalParams:
    """Read the tuned parameters of ``setup`` (from `params_path` by default).

    Raises
    ------
    FileNotFoundError
        If no tuned values exist; the message says how to make them.
    ValueError
        If the file holds the values of another set-up.
    """
    path = Path(path) if path is not None else params_path(setup)
    record = read_record(path, what="tuned classical parameters", setup=setup,
                         make=f"python tools/tune_classical.py --setup {setup}")
    return ClassicalParams(**record["params"])


def save_params(params: ClassicalParams, path: str | os.PathLike,
                search: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> Path:
    """Write ``params`` and the record of its ``search`` as JSON, atomically.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is not set.
    """
    text = json.dumps({"params": dataclasses.asdict(params), "search": dict(search or {})},
                      indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, text, overwrite=overwrite)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
