"""The one list of reconstruction methods: key, name, family, and what builds each.

Every part of lpd that needs the methods reads them here: the configuration
(which networks `lpd.config.NetworkConfig` accepts), the model factory of
`lpd.training`, the experiments of `lpd.evaluation.reproduce` (the order of the
results table) and the help texts of the ``lpd`` command. Adding a method is
one new module and one entry of `METHODS`.

This module is data: it imports nothing of lpd (the builders are named by
dotted path and imported on use), so that every layer may read it and the
classical methods never import TensorFlow.

Families are those of the lecture on deep learning for image reconstruction
(``analytical``, ``optimisation``, ``statistical``: estimated from samples of the
training distribution, ``post-processing``, ``plug-and-play``: a learned
denoiser inside a classical iterative scheme, ``untrained``: a network fitted to
the data of one image, ``unrolled``, ``fully learned``: the whole map from data
to image, with no operator inside).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["Method", "METHODS", "FAMILIES", "MODALITIES", "get", "keys", "learned_keys",
           "unknown_method"]

FAMILIES = ("analytical", "optimisation", "statistical", "post-processing", "plug-and-play",
            "untrained", "unrolled", "fully learned")
"""The families of methods, in the order a results table lists them."""

MODALITIES = ("ct", "mri")
"""``"ct"``: a ray transform (`lpd.physics.operators`); ``"mri"``: sampled Fourier
coefficients (`lpd.physics.fourier`); `lpd.config.ProblemConfig.modality`."""


@dataclasses.dataclass(frozen=True)
class Method:
    """One reconstruction method.

    Attributes
    ----------
    key : str
        Short name: ``--method``/``--methods``, the ``method`` column of the
        results, the directory of shipped weights (``data/weights/<set-up>/<key>``).
    name : str
        Display name in tables and figures.
    family : str
        One of `FAMILIES`.
    learned : bool
        Whether it is a network trained by `lpd.training` (``lpd train``).
        Otherwise its parameters are tuned on validation data
        (`lpd.methods.classical`), or, for a method with ``trained`` set, its
        networks are trained by a procedure of its own.
    needs : str
        What it needs besides the operator and the noise model, in words: ``"nothing"``,
        ``"validation pairs"`` (a few, to tune its parameters), ``"images"`` (samples
        of the image distribution only) or ``"pairs"`` (training data and images).
    trained : bool
        Ships networks trained by its own procedure (not ``lpd train``): the
        plug-and-play denoiser (`lpd.methods.pnp`, ``tools/train_pnp.py``) and the
        splitting scheme (`lpd.methods.splitting`, ``tools/train_splitting.py``).
    builder : str
        ``"module:attribute"`` of what builds it: a network class with
        ``from_network(network_config, operator, **settings)``, or a classical
        reconstructor ``cls(setup, **params)`` (a class, or a function such as
        `lpd.methods.lmmse.linear_mmse` that estimates what it needs).
    summary : str
        One line for help texts.
    reference : str
        Where the method comes from.
    modalities : tuple of str
        The modalities it applies to (`MODALITIES`): FBP needs a ray transform,
        zero filling a Fourier operator; the others take any linear operator.
    """

    key: str
    name: str
    family: str
    learned: bool
    builder: str
    summary: str
    reference: str = ""
    modalities: tuple[str, ...] = ("ct", "mri")
    needs: str = "pairs"
    trained: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"{self.key}: family must be one of {FAMILIES}, got {self.family!r}")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"{self.key}: modalities must be some of {MODALITIES}, "
                             f"got {self.modalities!r}")

    def applies_to(self, modality: str) -> bool:
        """Whether the method works on a set-up of ``modality`` (``"ct"`` or ``"mri"``)."""
        return modality in self.modalities

    def load(self) -> Any:
        """The class (or function) that builds the method, imported now."""
        module, _, attribute = self.builder.partition(":")
        return getattr(importlib.import_module(module), attribute)


METHODS: dict[str, Method] = {m.key: m for m in (
    Method("fbp", "FBP", "analytical", False, "lpd.methods.classical:FBPReconstructor",
           "filtered back-projection with a tuned filter window and cut-off",
           modalities=("ct",),
           needs="validation pairs"),
    Method("zf", "Zero filling", "analytical", False,
           "lpd.methods.classical:ZeroFillingReconstructor",
           "the inverse Fourier transform with the unmeasured coefficients set to zero (MRI)",
           "Bernstein, Fain & Riederer, J Magn Reson Imaging 14(3), 2001",
           modalities=("mri",),
           needs="nothing"),
    Method("tv", "TV", "optimisation", False, "lpd.methods.classical:TVReconstructor",
           "total variation regularisation solved by PDHG (Chambolle-Pock)",
           needs="validation pairs"),
    Method("tikhonov", "Tikhonov", "optimisation", False,
           "lpd.methods.classical:TikhonovReconstructor",
           "quadratic (Tikhonov) regularisation solved by CGLS",
           needs="validation pairs"),
    Method("pinv", "Pseudo-inverse", "analytical", False,
           "lpd.methods.classical:PseudoInverseReconstructor",
           "the minimum-norm least-squares solution A^+ y (CGLS to convergence)",
           "Engl, Hanke & Neubauer, Regularization of Inverse Problems, 1996",
           needs="nothing"),
    Method("lmmse", "Linear MMSE", "statistical", False, "lpd.methods.lmmse:linear_mmse",
           "the best linear reconstruction for the training distribution, from samples",
           "Kay, Fundamentals of Statistical Signal Processing I, 1993, ch. 12",
           needs="images"),
    Method("unet", "FBP + U-Net", "post-processing", True, "lpd.methods.networks:FBPUNet",
           "a U-Net applied to the FBP (post-processing)",
           "Jin et al., IEEE TIP 26(9), 2017"),
    Method("pnp", "PnP (HQS + DnCNN)", "plug-and-play", False, "lpd.methods.pnp:load_pnp",
           "half-quadratic splitting with a DnCNN denoiser, trained once on images at every "
           "noise level, in place of the proximal step",
           "Venkatakrishnan et al., GlobalSIP 2013; Zhang et al., IEEE TPAMI 44(10), 2022",
           trained=True,
           needs="images (the denoiser), validation pairs"),
    Method("dip", "Deep image prior", "untrained", False, "lpd.methods.dip:load_dip",
           "an untrained U-Net fitted to the data of each image, stopped after a number of "
           "steps chosen on validation images",
           "Ulyanov, Vedaldi & Lempitsky, CVPR 2018; Baguer et al., Inverse Problems 36, 2020",
           needs="validation pairs (its steps)"),
    Method("admm", "ADMM + SCAE", "plug-and-play", False, "lpd.methods.splitting:load_splitting",
           "ADMM splitting a learned denoiser (an SCAE trained on the scheme's own iterates) "
           "from a classical data-consistent TV step",
           "Liu, Kuang & Zhang, MICCAI 2018", trained=True),
    Method("admm_gan", "ADMM + GAN", "plug-and-play", False,
           "lpd.methods.splitting:load_splitting_gan",
           "the ADMM splitting with its SCAE trained as the generator of a GAN (squared "
           "error plus an adversarial term against the seed's discriminator)",
           "Liu, Kuang & Zhang, MICCAI 2018; Goodfellow et al., NeurIPS 2014", trained=True),
    Method("lgd", "Learned gradient descent", "unrolled", True,
           "lpd.methods.networks:LearnedGradientDescent",
           "learned gradient descent: one shared update block fed the data gradient",
           "Adler & Öktem, Inverse Problems 33, 2017, arXiv:1704.04058"),
    Method("lp", "Learned Primal", "unrolled", True, "lpd.methods.networks:LearnedPrimal",
           "Learned Primal: LPD with the dual step replaced by the residual A f - y",
           "Adler & Öktem, IEEE TMI 37(6), 2018, arXiv:1707.06474"),
    Method("lpd", "Learned Primal-Dual", "unrolled", True,
           "lpd.methods.networks:LearnedPrimalDual",
           "Learned Primal-Dual: learned primal and dual updates, operator in every step",
           "Adler & Öktem, IEEE TMI 37(6), 2018, arXiv:1707.06474"),
    Method("automap", "AUTOMAP", "fully learned", True, "lpd.methods.networks:Automap",
           "dense layers from the data to the image, then convolutions (no operator inside)",
           "Zhu et al., Nature 555, 2018"),
)}
"""Every method, in the order of the results tables (classical first)."""


def unknown_method(key: Any, known: tuple[str, ...]) -> ValueError:
    """The error for a key that names no method: it lists the known ones."""
    return ValueError(f"unknown method {key!r}; choose one of {', '.join(known)}")


def get(key: str) -> Method:
    """The method ``key``; a `ValueError` lists the known keys when there is none."""
    try:
        return METHODS[key]
    except (KeyError, TypeError):
        raise unknown_method(key, keys()) from None


def keys(*, learned: bool | None = None) -> tuple[str, ...]:
    """The keys of all methods, or of the learned (``True``) or classical (``False``) ones."""
    return tuple(k for k, m in METHODS.items() if learned is None or m.learned == learned)


def learned_keys() -> tuple[str, ...]:
    """The keys of the learned methods (the networks `lpd train` trains)."""
    return keys(learned=True)
