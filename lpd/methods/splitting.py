"""The splitting of a learned regulariser from the inversion (Liu, Kuang & Zhang 2018).

An ADMM scheme whose data-consistent step stays classical and whose regulariser
is an ordinary denoising network, trained on the scheme's own iterates. With
``J(z) = 1/2 ||A z - y||^2 + mu TV(z)`` (the data term and a TV term whose weight
``mu`` shrinks from loop to loop), ``f_k`` the network of outer loop ``k`` and
``x^0 = z^0 = argmin J``, ``b^0 = 0``, each loop is the seed paper's scheme (13):

    z^{k+1} = argmin_z J_k(z) + rho / 2 ||x^k - z + b^k||^2      (PDHG, warm-started)
    xhat    = f_{k+1}(x^k)
    x^{k+1} = (xhat + rho (z^{k+1} - b^k)) / (1 + rho)
    b^{k+1} = b^k + (xhat - z^{k+1})

The seed runs five loops. Here every loop's network is kept and the scheme
stops after the loop with the best validation PSNR (`load_splitting`), which at
high noise can come before the fifth: the shrinking TV weight lets noise back in.

Training (the paper's scheme (10)) runs the same loops over the training slices:
before the ``x`` step of loop ``k`` the network ``f_{k+1}`` is trained (warm-started
from ``f_k``) to map the current iterates ``x^k`` to the ground truth. The paper's
``x`` step of training, ``argmin_x L_H(x, theta) + rho / 2 ||x - z + b||^2``, is
replaced by the inference update above, so that every network is trained on
exactly the iterates it meets at inference (said in the module's result notes).

The network is the paper's stacked convolutional auto-encoder (SCAE): six 3x3
convolutions with 32, 64, 128, 64 and 32 hidden channels and ReLU, stride 1,
here with a residual connection (the network predicts the correction of its
input). It trains on random patches of the iterates (``patch`` pixels square,
several times its receptive field of 13 pixels), a fixed number per loop: the
same pixels per loop at any image size.

The GAN variant (``network="gan"``, method ``admm_gan``) trains the same SCAE
as the generator of a GAN against the seed's eight-layer discriminator
(`lpd.methods.denoising.discriminator`, warm-started from loop to loop like the
generator), with the mean squared error plus ``adversarial_weight`` times the
adversarial loss (the seed's (4) has the adversarial term only; without the
squared error nothing would tie a network's output to its own target).

References
----------
Liu J, Kuang T, Zhang X. Image reconstruction by splitting deep learning
regularization from iterative inversion. MICCAI 2018: the splitting (8)-(10),
inference (13), Table 1 (the SCAE, the GAN's discriminator, 5 outer loops).
Boyd S et al. Distributed optimization and statistical learning via the
alternating direction method of multipliers. Found Trends Mach Learn 3(1), 2011.
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
from lpd.io import atomic_write, read_record, shipped
from lpd.methods import classical, denoising
from lpd.physics import operators

__all__ = ["SplittingConfig", "SplittingReconstructor", "train_splitting", "save_splitting",
           "load_splitting", "load_splitting_gan", "weights_dir", "NETWORKS"]

NETWORKS = {"scae": ("admm", "ADMM + SCAE"), "gan": ("admm_gan", "ADMM + GAN")}
"""The networks of the scheme: ``{network: (method key, name)}``."""


@dataclasses.dataclass(frozen=True)
class SplittingConfig:
    """The settings of the splitting scheme and of the training of its networks.

    Parameters
    ----------
    outer_loops : int
        ADMM loops, one network each (5 in the paper).
    rho : float
        Weight of the coupling ``rho / 2 ||x - z + b||^2``.
    tv_weight : float
        ``mu`` of the first loop (and of ``x^0 = argmin J``); by default the
        tuned TV weight of the set-up (`lpd.methods.classical.load_params`).
    tv_decay : float
        ``mu`` is multiplied by this after each loop ("decreasing by outer loops").
    initial_iter, z_iter : int
        PDHG iterations of ``argmin J`` and of each warm-started ``z`` step.
    filters : tuple of int
        Hidden channels of the SCAE.
    patch : int
        Side of the training patches in pixels.
    first_patches, later_patches : int
        Training patches of the first loop and of each later (warm-started) loop.
    batch_size : int
        Patches per gradient step.
    learning_rate : float
        Adam's step.
    seed : int
        Seed of the noise of the training data, the patches and the initial weights.
    network : str
        ``"scae"`` (trained on the squared error) or ``"gan"`` (the SCAE trained
        as a GAN's generator), a key of `NETWORKS`.
    adversarial_weight : float
        Weight of the adversarial loss beside the squared error (``"gan"`` only).
    """

    outer_loops: int = 5
    rho: float = 1.0
    tv_weight: float | None = None
    tv_decay: float = 0.5
    initial_iter: int = 300
    z_iter: int = 100
    filters: tuple[int, ...] = (32, 64, 128, 64, 32)
    patch: int = 48
    first_patches: int = 4000
    later_patches: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    network: str = "scae"
    adversarial_weight: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, "
                             f"got {self.network!r}")
        if not (math.isfinite(self.adversarial_weight) and self.adversarial_weight >= 0):
            raise ValueError(f"adversarial_weight must be finite and >= 0, "
                             f"got {self.adversarial_weight}")
        check_positive(self, ("outer_loops", "initial_iter", "z_iter", "patch", "batch_size",
                              "first_patches", "later_patches"),
                       ("rho", "tv_decay", "learning_rate")
                       + (("tv_weight",) if self.tv_weight is not None else ()))
        if not self.filters or min(self.filters) < 1:
            raise ValueError(f"filters must be positive channel counts, got {self.filters}")

    def mu(self, loop: int) -> float:
        """The TV weight of loop ``loop`` (0: the initial ``argmin J``)."""
        return float(self.tv_weight) * self.tv_decay ** loop


def weights_dir(setup_name: str, root: str | Path | None = None, network: str = "scae") -> Path:
    """``data/weights/<set-up>/<key>`` (or under ``root``): where the networks ship.

    ``<key>`` is the method's (``admm``, or ``admm_gan`` for the GAN variant),
    under ``data/weights`` beside the package (`lpd.io.shipped`) unless ``root``
    is given.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    return (Path(root if root is not None else shipped("weights")) / setup_name
            / NETWORKS[network][0])


class _Scheme:
    """The loops of (13) on a batch of data, shared by training and inference."""

    def __init__(self, setup, config: SplittingConfig):
        self.setup = setup
        self.config = config
        self._tv = {}

    def tv(self, loop: int, n_iter: int) -> classical.TVReconstructor:
        key = (loop, n_iter)
        if key not in self._tv:
            self._tv[key] = classical.TVReconstructor(self.setup, self.config.mu(loop), n_iter,
                                                      nonneg=True)
        return self._tv[key]

    def start(self, data: np.ndarray) -> dict[str, np.ndarray]:
        """``x^0 = z^0 = argmin J``, ``b^0 = 0`` for a batch of data."""
        tv = self.tv(0, self.config.initial_iter)
        z = np.stack([tv(d) for d in data])
        return {"x": z.copy(), "z": z, "b": np.zeros_like(z)}

    def z_step(self, state: dict, data: np.ndarray, loop: int) -> None:
        tv = self.tv(loop, self.config.z_iter)
        rho = self.config.rho
        state["z"] = np.stack([
            tv.reconstruct(d, anchor=x + b, anchor_weight=rho, start=z)
            for d, x, b, z in zip(data, state["x"], state["b"], state["z"], strict=True)])

    def x_step(self, state: dict, xhat: np.ndarray) -> None:
        rho = np.float32(self.config.rho)
        z, b = state["z"], state["b"]
        state["x"] = (xhat + rho * (z - b)) / (1 + rho)
        state["b"] = b + (xhat - z)


class SplittingReconstructor(classical.Reconstructor):
    """The splitting scheme at inference, with its trained networks (one per loop).

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
    config : SplittingConfig
        With ``tv_weight`` set.
    networks : sequence of keras.Model
        ``f_1 .. f_K``, ``K = config.outer_loops``.
    loops : int, optional
        How many of the loops to run (the first ``loops`` networks); all by
        default. `load_splitting` takes the loop with the best validation PSNR.
    """

    key = "admm"
    name = "ADMM + SCAE"

    def __init__(self, setup, config: SplittingConfig, networks, *, loops: int | None = None,
                 training: str = ""):
        super().__init__(setup)
        if config.tv_weight is None:
            raise ValueError("config.tv_weight must be set (train_splitting sets it)")
        if len(networks) != config.outer_loops:
            raise ValueError(f"expected {config.outer_loops} networks, got {len(networks)}")
        loops = config.outer_loops if loops is None else int(loops)
        if not 0 <= loops <= config.outer_loops:
            raise ValueError(f"loops must be in [0, {config.outer_loops}], got {loops}")
        self.config = config
        self.key, self.name = NETWORKS[config.network]
        self.networks = list(networks)
        self.loops = loops
        self.training = training
        self._scheme = _Scheme(self.setup, config)

    @property
    def params(self) -> dict:
        c = self.config
        return {"outer_loops": c.outer_loops, "loops_used": self.loops, "rho": c.rho,
                "tv_weight": c.tv_weight, "tv_decay": c.tv_decay, "z_iter": c.z_iter}

    @property
    def n_parameters(self) -> int:
        return int(sum(n.count_params() for n in self.networks))

    def reconstruct_loops(self, data: np.ndarray) -> list[np.ndarray]:
        """``x^0, x^1, ..., x^K`` for a batch of data (the intermediate results)."""
        state = self._scheme.start(data)
        out = [state["x"]]
        for loop, network in enumerate(self.networks[:self.loops], start=1):
            self._scheme.z_step(state, data, loop)
            self._scheme.x_step(state, denoising.apply(network, state["x"]))
            out.append(state["x"])
        return out

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        return self.reconstruct_loops(data[None])[-1][0].astype(np.float32)


def train_splitting(setup, train_images: np.ndarray, val_images: np.ndarray,
                    config: SplittingConfig | None = None, *,
                    log: Callable[[str], Any] | None = None) -> tuple[SplittingReconstructor, dict]:
    """Train the networks of the splitting scheme on a set-up's training images.

    Data are simulated once from the images and their x-flips with the
    set-up's noise (seeded). Each loop trains its network, then takes the
    loop's steps on the training and the validation data; validation PSNR
    (data range 1) is recorded per loop.

    Returns
    -------
    (SplittingReconstructor, dict)
        The trained scheme and its training record (per loop: loss, training
        and validation PSNR of ``x^k``, seconds).
    """
    from lpd.data import pipelines

    log = log or (lambda line: print(line, flush=True))
    setup = operators.as_setup(setup)
    config = config or SplittingConfig()
    if config.tv_weight is None:
        config = dataclasses.replace(
            config, tv_weight=classical.load_params(setup.config.name).tv_weight)
    train_images = np.asarray(train_images, np.float32)
    images = np.concatenate([train_images, train_images[:, ::-1]])
    val_images = np.asarray(val_images, np.float32)
    rng = np.random.default_rng(config.seed)
    data = pipelines.simulate(setup, images, rng)
    val_data = pipelines.simulate(setup, val_images, np.random.default_rng(config.seed + 1))
    scheme = _Scheme(setup, config)
    started = time.perf_counter()
    state, val_state = scheme.start(data), scheme.start(val_data)

    def psnr(x, truth):
        return float(np.mean([metrics.psnr(t, r, 1.0) for t, r in zip(truth, x, strict=True)]))

    record = {"config": dataclasses.asdict(config), "n_train": len(images),
              "n_validation": len(val_images),
              "loops": [{"loop": 0, "train_psnr": psnr(state["x"], images),
                         "validation_psnr": psnr(val_state["x"], val_images),
                         "seconds": time.perf_counter() - started}]}
    log(f"  loop 0 (argmin J, mu {config.mu(0):.3g}): train {record['loops'][0]['train_psnr']:.2f}"
        f" dB, validation {record['loops'][0]['validation_psnr']:.2f} dB")
    networks = []
    network = denoising.scae(config.filters, config.seed)
    critic = denoising.discriminator(seed=config.seed) if config.network == "gan" else None
    for loop in range(1, config.outer_loops + 1):
        t0 = time.perf_counter()
        scheme.z_step(state, data, loop)
        scheme.z_step(val_state, val_data, loop)
        if networks:  # warm start from the previous loop's network
            previous = network
            network = denoising.scae(config.filters, config.seed + loop)
            network.set_weights(previous.get_weights())
        n = config.first_patches if loop == 1 else config.later_patches
        inputs = state["x"]

        def draw(step, inputs=inputs):
            return denoising.random_patches(inputs, images, config.batch_size, config.patch, rng)

        if critic is None:
            loss = denoising.fit(network, draw, math.ceil(n / config.batch_size),
                                 config.learning_rate, log=log, label=f"loop {loop}: ")
        else:
            loss = denoising.fit_adversarial(
                network, critic, draw, math.ceil(n / config.batch_size),
                config.learning_rate, config.adversarial_weight, log=log,
                label=f"loop {loop}: ")
        networks.append(network)
        scheme.x_step(state, denoising.apply(network, state["x"]))
        scheme.x_step(val_state, denoising.apply(network, val_state["x"]))
        entry = {"loop": loop, "loss": loss, "train_psnr": psnr(state["x"], images),
                 "validation_psnr": psnr(val_state["x"], val_images),
                 "seconds": time.perf_counter() - t0}
        record["loops"].append(entry)
        log(f"  loop {loop} (mu {config.mu(loop):.3g}): train {entry['train_psnr']:.2f} dB, "
            f"validation {entry['validation_psnr']:.2f} dB ({entry['seconds']:.0f} s)")
    record["seconds"] = time.perf_counter() - started
    return SplittingReconstructor(setup, config, networks), record


def save_splitting(method: SplittingReconstructor, record: dict, directory: str | Path, *,
                   overwrite: bool = False, command: str = "") -> Path:
    """Write the networks (``networks.npz``) and ``splitting.json`` into ``directory``."""
    directory = Path(directory)
    arrays = {f"loop{k}_{i}": w for k, net in enumerate(method.networks, start=1)
              for i, w in enumerate(net.get_weights())}
    manifest = {"setup": method.setup.config.name, "config": dataclasses.asdict(method.config),
                "record": record, "command": command,
                "n_parameters": method.n_parameters}
    for name in ("networks.npz", "splitting.json"):
        if (directory / name).exists() and not overwrite:
            raise FileExistsError(f"{directory / name} exists; pass overwrite=True to replace it")
    atomic_write(directory / "networks.npz", lambda f: np.savez_compressed(f, **arrays),
                 overwrite=overwrite)
    atomic_write(directory / "splitting.json", json.dumps(manifest, indent=2) + "\n",
                 overwrite=overwrite)
    return directory


def load_splitting(setup, directory: str | Path | None = None, *, network: str = "scae",
                   trained_on: str | None = None,
                   log: Callable[[str], Any] | None = None) -> SplittingReconstructor:
    """The trained splitting scheme of a set-up (`weights_dir` of ``network`` by default).

    ``trained_on`` names another MRI set-up whose networks to run on this one's
    data (another rate of the same pattern and noise, say): the scheme's
    regulariser is learned apart from the inversion, so it may serve another
    mask. Its first loop then takes this set-up's tuned TV weight
    (`lpd.methods.classical.load_params`), as training here would have; the
    number of loops stays the one chosen on the other set-up's validation slices.

    Raises
    ------
    FileNotFoundError
        If no networks were trained for the set-up; the message gives the command.
    """
    setup = operators.as_setup(setup)
    source = trained_on or setup.config.name
    directory = (Path(directory) if directory is not None
                 else weights_dir(source, network=network))
    flag = "" if network == "scae" else f" --network {network}"
    manifest = read_record(
        directory / "splitting.json", what="trained splitting networks", setup=source,
        make=f"python tools/train_splitting.py --setup {source}{flag}")
    config = SplittingConfig(**manifest["config"])
    if config.network != network:
        raise ValueError(f"{directory} holds the {config.network} networks of the scheme, "
                         f"not the {network} ones")
    if source != setup.config.name:
        config = dataclasses.replace(
            config, tv_weight=classical.load_params(setup.config.name).tv_weight)
    with np.load(directory / "networks.npz") as arrays:
        networks = []
        for k in range(1, config.outer_loops + 1):
            net = denoising.scae(config.filters)
            count = len(net.get_weights())
            net.set_weights([arrays[f"loop{k}_{i}"] for i in range(count)])
            networks.append(net)
    # The loop with the best validation PSNR (the validation slices went through
    # every loop during training): later loops, with less TV, can lose at high noise.
    record = manifest["record"]["loops"]
    best = max(record[1:], key=lambda entry: entry["validation_psnr"])
    where = "" if source == setup.config.name else f" of {source}"
    training = (f"{config.outer_loops} ADMM loops trained on {manifest['record']['n_train']} "
                f"slices{where} (with x-flips); {best['loop']} used, the best on "
                f"validation ({best['validation_psnr']:.2f} dB)")
    if log is not None:
        log(f"  {NETWORKS[network][0]}: networks {directory} ({training})")
    return SplittingReconstructor(setup, config, networks, loops=best["loop"], training=training)


def load_splitting_gan(setup, directory: str | Path | None = None, *,
                       trained_on: str | None = None,
                       log: Callable[[str], Any] | None = None) -> SplittingReconstructor:
    """The trained GAN variant of the splitting scheme (``data/weights/<set-up>/admm_gan``)."""
    return load_splitting(setup, directory, network="gan", trained_on=trained_on, log=log)
