"""Plug-and-play: a learned denoiser in place of the proximal operator of a regulariser.

Half-quadratic splitting (HQS) of ``min_x 1/2 ||A x - y||^2 + R(x)`` with the
proximal step of ``R`` replaced by a denoiser ``D(., sigma)`` trained once on
images of the training distribution at every noise level ``sigma`` in
``[0, max_level]`` (`lpd.methods.denoising.dncnn`, the level a second input):

    x^{k+1} = argmin_x 1/2 ||A x - y||^2 + rho_k / 2 ||x - z^k||^2     (CG, warm-started)
    z^{k+1} = D(x^{k+1}, sigma_k)

with ``sigma_k`` falling geometrically from ``level_start`` to ``level_end`` over
``n_iter`` iterations and ``rho_k = strength / sigma_k^2`` (the coupling of a
denoiser at level ``sigma_k`` to data of unit noise, as in DPIR). ``z^0`` is the
set-up's analytical reconstruction (FBP or zero filling).

The image distributions here are invariant under the eight symmetries of the
square, so a denoiser of them should be too; a trained one is not quite, and
what it gets wrong differs between symmetries. ``ensemble="periodic"`` applies
it in iteration ``k`` to the image moved by symmetry ``k mod 8`` and moves the
result back (DPIR's periodical geometric self-ensemble, at no extra cost);
``"full"`` averages the eight in every iteration (eight times the cost). On the
``ellipses`` validation phantoms the periodic ensemble raised the scheme tuned
without it from 32.34 to 33.27 dB, the full one to 33.37 dB, and the periodic one
retuned with 80 iterations to 33.99 dB. A grid that is not square has no
transposing symmetries: use ``ensemble="none"`` there.

The denoiser knows nothing of the operator, so the same network serves every
set-up whose images look like its training images; the scheme's parameters
(strength, levels, iterations) are tuned per set-up on validation data
(``tools/train_pnp.py``), never on the test images.

References
----------
Venkatakrishnan SV, Bouman CA, Wohlberg B. Plug-and-play priors for model based
reconstruction. IEEE GlobalSIP 2013.
Zhang K, Li Y, Zuo W, Zhang L, Van Gool L, Timofte R. Plug-and-play image
restoration with deep denoiser prior. IEEE TPAMI 44(10), 2022 (DPIR: HQS, the
level schedule and the coupling ``rho_k ~ 1 / sigma_k^2``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.config import check_positive
from lpd.data.pipelines import inverse_symmetry, symmetry
from lpd.io import atomic_write, read_record, shipped
from lpd.methods import classical, denoising
from lpd.physics import operators
from lpd.physics.projector import projector

ENSEMBLES = ("none", "periodic", "full")

__all__ = ["ENSEMBLES", "DenoiserConfig", "train_denoiser", "save_denoiser", "load_denoiser",
           "PnPReconstructor", "load_pnp", "pnp_path", "denoiser_dir"]

def denoiser_dir(images: str, root: str | Path | None = None) -> Path:
    """``data/weights/denoisers/<images>``: the denoiser trained on that image family."""
    return Path(root if root is not None else shipped("weights")) / "denoisers" / images


def pnp_path(setup_name: str, root: str | Path | None = None) -> Path:
    """``data/weights/<set-up>/pnp.json``: the tuned scheme of a set-up and its denoiser's name."""
    return Path(root if root is not None else shipped("weights")) / setup_name / "pnp.json"


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """How the plug-and-play denoiser is trained.

    Parameters
    ----------
    images : str
        Phantom family of `lpd.data.phantoms` it learns (a fresh draw every step).
    shape : tuple of int
        Grid the phantoms are drawn on (patches are cut from them).
    features, depth : int
        Width and number of convolutions of `lpd.methods.denoising.dncnn`.
    max_level : float
        Largest noise standard deviation trained on; each patch gets a level
        drawn uniformly from ``[0, max_level]``.
    patch, batch_size, steps : int
        Patch side, patches per step, Adam steps.
    phantoms_per_step : int
        Fresh phantoms the patches of one step are cut from.
    learning_rate : float
        Adam's (peak) learning rate.
    decay : {"constant", "cosine"}
        Its schedule (`lpd.methods.denoising.learning_rate_schedule`). The shipped
        denoiser's was constant: one trained 12 000 steps with a cosine decay
        denoised better (36.6 against 35.4 dB at 5 %) but made plug-and-play worse
        on Shepp-Logan (23.8 against 27.3 dB) and no better on held-out ellipses.
    seed : int
    """

    images: str = "ellipses"
    shape: tuple[int, int] = (128, 128)
    features: int = 32
    depth: int = 8
    max_level: float = 0.2
    patch: int = 40
    batch_size: int = 16
    steps: int = 2000
    phantoms_per_step: int = 4
    learning_rate: float = 1e-3
    decay: str = "constant"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.decay not in denoising.DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; choose one of {denoising.DECAYS}")
        check_positive(self, ("features", "depth", "patch", "batch_size", "steps",
                              "phantoms_per_step"), ("max_level",))


def _phantoms(config: DenoiserConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    from lpd.data.pipelines import RandomPhantoms

    source = RandomPhantoms(config.images, config.shape)
    return np.stack([source.generate(rng) for _ in range(n)]).astype(np.float32)


def _denoising_psnr(network, clean: np.ndarray, level: float, seed: int) -> float:
    noisy = clean + level * np.random.default_rng(seed).standard_normal(clean.shape)
    out = denoising.apply(network, noisy.astype(np.float32), level)
    return float(np.mean([metrics.psnr(c, o, 1.0) for c, o in zip(clean, out, strict=True)]))


def train_denoiser(config: DenoiserConfig | None = None, *,
                   log: Callable[[str], Any] | None = None) -> tuple[Any, dict]:
    """Train the denoiser on fresh phantoms at random noise levels; returns (network, record).

    The record has the denoising PSNR (data range 1) on 8 held-out phantoms at
    levels 0.02, 0.05 and 0.1 before and after training.
    """
    log = log or (lambda line: print(line, flush=True))
    config = config or DenoiserConfig()
    rng = np.random.default_rng(config.seed)
    network = denoising.dncnn(config.features, config.depth, config.seed)
    held_out = _phantoms(config, 8, np.random.default_rng(config.seed + 10_000))
    levels = (0.02, 0.05, 0.1)

    def draw(step):
        clean = _phantoms(config, config.phantoms_per_step, rng)
        _, patches = denoising.random_patches(clean, clean, config.batch_size, config.patch,
                                              rng)
        sigma = rng.uniform(0, config.max_level, size=(config.batch_size, 1, 1))
        noisy = patches + sigma * rng.standard_normal(patches.shape)
        x = np.stack([noisy, np.broadcast_to(sigma, patches.shape)], axis=-1)
        return x, patches

    before = {str(s): _denoising_psnr(network, held_out, s, 1) for s in levels}
    t0 = time.perf_counter()
    loss = denoising.fit(network, draw, config.steps, config.learning_rate,
                         decay=config.decay, log=log, label="denoiser: ")
    after = {str(s): _denoising_psnr(network, held_out, s, 1) for s in levels}
    noisy_psnr = {str(s): float(-20 * math.log10(s)) for s in levels}
    log("  denoising PSNR on 8 held-out phantoms by level: "
        + ", ".join(f"{s}: {noisy_psnr[s]:.1f} -> {after[s]:.2f} dB" for s in after))
    record = {"config": dataclasses.asdict(config), "loss": loss,
              "seconds": time.perf_counter() - t0, "psnr_noisy": noisy_psnr,
              "psnr_before": before, "psnr_after": after}
    return network, record


def save_denoiser(network, record: dict, directory: str | Path, *, overwrite: bool = False,
                  command: str = "") -> Path:
    """Write ``denoiser.npz`` and ``denoiser.json`` into ``directory``."""
    directory = Path(directory)
    for name in ("denoiser.npz", "denoiser.json"):
        if (directory / name).exists() and not overwrite:
            raise FileExistsError(f"{directory / name} exists; pass overwrite=True to replace it")
    weights = {f"w{i}": w for i, w in enumerate(network.get_weights())}
    atomic_write(directory / "denoiser.npz", lambda f: np.savez_compressed(f, **weights),
                 overwrite=overwrite)
    atomic_write(directory / "denoiser.json", json.dumps(
        {"record": record, "command": command, "n_parameters": int(network.count_params())},
        indent=2) + "\n", overwrite=overwrite)
    return directory


def load_denoiser(directory: str | Path) -> tuple[Any, dict]:
    """The denoiser saved in ``directory`` and its manifest.

    Raises
    ------
    FileNotFoundError
        If none is there; the message gives the command that trains it.
    """
    directory = Path(directory)
    manifest = read_record(directory / "denoiser.json", what="trained denoiser",
                           make="python tools/train_pnp.py --setup ellipses")
    config = DenoiserConfig(**manifest["record"]["config"])
    network = denoising.dncnn(config.features, config.depth)
    with np.load(directory / "denoiser.npz") as arrays:
        network.set_weights([arrays[f"w{i}"] for i in range(len(network.get_weights()))])
    return network, manifest


class PnPReconstructor(classical.Reconstructor):
    """Plug-and-play HQS with a learned denoiser (see the module docstring).

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
    denoiser : keras.Model
        A `lpd.methods.denoising.dncnn` network.
    strength : float
        ``rho_k * sigma_k^2``: how strongly each ``x`` step is pulled to the denoised image.
    level_start, level_end : float
        The denoiser's noise level in the first and the last iteration.
    n_iter, cg_iter : int
        HQS iterations, and CG iterations of each ``x`` step.
    ensemble : {"none", "periodic", "full"}
        How the denoiser uses the symmetries of the square (see the module docstring).
    """

    key = "pnp"
    name = "PnP (HQS + DnCNN)"

    def __init__(self, setup, denoiser, strength: float = 1e-3, level_start: float = 0.1,
                 level_end: float = 0.01, n_iter: int = 20, cg_iter: int = 10,
                 ensemble: str = "periodic", *, post_log: bool = False, training: str = ""):
        super().__init__(setup, post_log=post_log)
        if ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}")
        if ensemble != "none" and self.setup.space.shape[0] != self.setup.space.shape[1]:
            raise ValueError(f"ensemble {ensemble!r} needs a square image grid, "
                             f"got {tuple(self.setup.space.shape)}; use ensemble='none'")
        for name, value in (("strength", strength), ("level_start", level_start),
                            ("level_end", level_end)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if int(n_iter) < 1 or int(cg_iter) < 1:
            raise ValueError(f"n_iter and cg_iter must be >= 1, got {n_iter}, {cg_iter}")
        self.denoiser = denoiser
        self.strength, self.level_start, self.level_end = (float(strength), float(level_start),
                                                           float(level_end))
        self.n_iter, self.cg_iter = int(n_iter), int(cg_iter)
        self.ensemble = ensemble
        self.training = training
        op = self.setup.operator if self.noise.kind == "gaussian" else self.setup.ray_trafo
        self._projector = projector(op)
        self._start = classical.analytical(self.setup, post_log=post_log)

    @property
    def params(self) -> dict:
        return {"strength": self.strength, "level_start": self.level_start,
                "level_end": self.level_end, "n_iter": self.n_iter, "cg_iter": self.cg_iter,
                "ensemble": self.ensemble, **super().params}

    @property
    def n_parameters(self) -> int:
        return int(self.denoiser.count_params())

    def _x_step(self, x: np.ndarray, z: np.ndarray, rhs_data: np.ndarray, rho: float
                ) -> np.ndarray:
        """CG on ``(W^T W + rho I) x = W^T y + rho z``, from ``x``."""
        proj = self._projector
        rho = np.float32(rho)

        def normal(v):
            return proj.transpose(proj.forward(v)) + rho * v

        r = rhs_data + rho * z - normal(x)
        p = r.copy()
        rr = float(np.vdot(r, r))
        stop = 1e-14 * float(np.vdot(rhs_data + rho * z, rhs_data + rho * z))
        for _ in range(self.cg_iter):
            if rr <= stop:  # converged to float32 precision
                break
            q = normal(p)
            alpha = rr / float(np.vdot(p, q))
            x = x + np.float32(alpha) * p
            r = r - np.float32(alpha) * q
            rr_new = float(np.vdot(r, r))
            p = r + np.float32(rr_new / rr) * p
            rr = rr_new
        return x

    def denoise(self, x: np.ndarray, sigma: float, k: int) -> np.ndarray:
        """The denoiser's ``z`` step on image ``x`` in iteration ``k`` (0-based)."""
        if self.ensemble == "none":
            return denoising.apply(self.denoiser, x[None], sigma)[0]
        moves = range(8) if self.ensemble == "full" else (k % 8,)
        moved = np.stack([symmetry(x, j) for j in moves])
        out = denoising.apply(self.denoiser, moved, sigma)
        back = [symmetry(o, inverse_symmetry(j)) for j, o in zip(moves, out, strict=True)]
        return np.mean(back, axis=0)

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        z = self._start._reconstruct(data)
        lines = self.line_integrals(data)
        rhs = self._projector.transpose(lines)
        x = z.copy()
        for k, sigma in enumerate(np.geomspace(self.level_start, self.level_end, self.n_iter)):
            x = self._x_step(x, z, rhs, self.strength / sigma**2)
            z = self.denoise(x, float(sigma), k)
        return z.astype(np.float32)


def load_pnp(setup, path: str | Path | None = None, *,
             log: Callable[[str], Any] | None = None) -> PnPReconstructor:
    """The tuned plug-and-play scheme of a set-up with its shipped denoiser.

    A record written before the self-ensemble existed has no ``ensemble`` and runs
    without one, as it was tuned.

    Raises
    ------
    FileNotFoundError
        If the scheme was not tuned for the set-up or its denoiser is missing.
    """
    setup = operators.as_setup(setup)
    path = Path(path) if path is not None else pnp_path(setup.config.name)
    record = read_record(path, what="tuned plug-and-play scheme", setup=setup.config.name,
                         make=f"python tools/train_pnp.py --setup {setup.config.name}")
    network, manifest = load_denoiser(path.parent.parent / "denoisers" / record["denoiser"])
    after = manifest["record"]["psnr_after"]
    training = (f"denoiser trained on {record['denoiser']} phantoms "
                f"({manifest['record']['config']['steps']} steps), scheme tuned on "
                f"{record['search']['n_images']} validation images")
    if log is not None:
        log(f"  pnp: denoiser {record['denoiser']} (denoising {after}), {record['params']}")
    params = {"ensemble": "none", **record["params"]}
    return PnPReconstructor(setup, network, **params, training=training)
