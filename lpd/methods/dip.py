"""The deep image prior: an untrained generator fitted to the data of one image.

A U-Net ``G`` (`lpd.methods.networks.UNet`) with random initial weights maps a
fixed random input ``z`` to an image; its weights are fitted to the data of the
one image being reconstructed, ``min_theta ||A G_theta(z) - y||^2`` by Adam, and
the reconstruction is ``G_theta(z)`` after ``n_iter`` steps. Nothing is trained
beforehand: the architecture is the prior, and the number of steps is the
regulariser (the network fits the image before the noise). That number is
chosen on validation images (`iteration_curve`, ``tools/tune_dip.py``) and then
fixed, never on the test image's ground truth.

With ``tv_weight > 0`` the fit minimises the variational objective
``0.5 ||A G_theta(z) - y||^2 + tv_weight * TV(G_theta(z))`` instead (DIP + TV, Baguer
et al. 2020; ``TV`` isotropic as in `lpd.methods.classical.TVReconstructor`, whose
weight carries over), and the reconstruction is the iterate with the lowest
objective seen: an estimator defined by the data alone, which a loss spike of
Adam cannot spoil. The generator then reparametrises TV's problem, and the step
count matters less.

It is slow by nature: every reconstruction trains a network. lpd reports its
time per image, and `lpd reproduce` scores it on a few of the held-out samples
only (`DIPReconstructor.max_held_out`).

References
----------
Ulyanov D, Vedaldi A, Lempitsky V. Deep image prior. CVPR 2018; IJCV 128, 2020.
Baguer DO, Leuschner J, Schmidt M. Computed tomography reconstruction using deep
image prior and learned reconstruction methods. Inverse Problems 36(9), 2020.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lpd import metrics
from lpd.config import check_positive
from lpd.io import atomic_write, read_record, shipped
from lpd.methods import classical
from lpd.physics import operators

__all__ = ["DIPReconstructor", "iteration_curve", "load_dip", "dip_path", "total_variation"]

def dip_path(setup_name: str, root: str | Path | None = None) -> Path:
    """``data/weights/<set-up>/dip.json``: the iteration count chosen for a set-up."""
    return Path(root if root is not None else shipped("weights")) / setup_name / "dip.json"


class DIPReconstructor(classical.Reconstructor):
    """The deep image prior on one data array at a time.

    Parameters
    ----------
    setup : lpd.operators.Setup, ProblemConfig or str
    n_iter : int
        Adam steps on each image (the regulariser).
    learning_rate : float
    features, depth : int
        Width at the finest level and number of poolings of the U-Net.
    input_channels : int
        Channels of the fixed random input ``z`` (uniform in [0, 0.1]).
    seed : int
        Seed of ``z`` and of the initial weights (the same for every image).
    tv_weight : float
        Weight of an isotropic total-variation term (0: the plain deep image prior,
        whose result is the last iterate; > 0: DIP + TV, whose result is the iterate
        of lowest objective).
    patience : int
        Whenever the objective has not reached a new low for this many steps, go
        back to the weights of the lowest objective and halve the learning rate
        (the backtracking of Ulyanov et al.'s code after a loss spike; 0: a
        constant rate, no going back). The rule looks only at the past, so a run of
        ``k`` steps is the start of any longer one and the step count can still be
        chosen on one long curve.
    max_held_out : int
        How many held-out samples `lpd reproduce` scores it on.
    """

    key = "dip"
    name = "Deep image prior"

    def __init__(self, setup, n_iter: int = 1000, learning_rate: float = 1e-3,
                 features: int = 16, depth: int = 3, input_channels: int = 8, seed: int = 0,
                 tv_weight: float = 0.0, patience: int = 0, *, max_held_out: int = 8,
                 post_log: bool = False, training: str = ""):
        super().__init__(setup, post_log=post_log)
        self.n_iter, self.learning_rate = n_iter, learning_rate
        check_positive(self, integers=("n_iter",), reals=("learning_rate",))
        if not (math.isfinite(tv_weight) and tv_weight >= 0):
            raise ValueError(f"tv_weight must be finite and >= 0, got {tv_weight}")
        self.n_iter, self.learning_rate = int(n_iter), float(learning_rate)
        self.tv_weight = float(tv_weight)
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be a whole number >= 0, got {patience}")
        self.patience = int(patience)
        self.features, self.depth, self.input_channels = int(features), int(depth), int(
            input_channels)
        self.seed, self.max_held_out, self.training = int(seed), int(max_held_out), training
        self._backend = "auto"

    @property
    def params(self) -> dict:
        return {"n_iter": self.n_iter, "learning_rate": self.learning_rate,
                "features": self.features, "depth": self.depth, "tv_weight": self.tv_weight,
                "patience": self.patience, **super().params}

    @property
    def n_parameters(self) -> int:
        return 0  # nothing is trained beforehand; every image fits its own network

    def fit(self, data, every: int | None = None,
            callback: Callable[[int, np.ndarray], Any] | None = None) -> np.ndarray:
        """Fit the generator to ``data``; ``callback(step, image)`` every ``every`` steps."""
        import keras
        import tensorflow as tf

        from lpd.methods.networks import UNet

        data = self.line_integrals(self.check_data(data))
        op = (self.setup.tf_operator(self._backend) if self.noise.kind == "gaussian" else
              _ray_trafo_face(self.setup))
        keras.utils.set_random_seed(self.seed)
        generator = UNet(n_out=1, features=self.features, depth=self.depth, widths="doubling")
        z = tf.constant(np.random.default_rng(self.seed).uniform(
            0, 0.1, (1, *self.image_shape, self.input_channels)).astype(np.float32))
        generator.build(z.shape)
        y = tf.constant(data[None, ..., None])
        optimizer = keras.optimizers.Adam(self.learning_rate)

        weights = generator.trainable_variables
        saved = [tf.Variable(w, trainable=False) for w in weights] if self.patience else []

        @tf.function
        def gradient():
            with tf.GradientTape() as tape:
                image = generator(z)
                loss = 0.5 * tf.reduce_sum(tf.square(op(image) - y))
                if self.tv_weight > 0:
                    loss += self.tv_weight * total_variation(image)
            return loss, image, tape.gradient(loss, weights)

        @tf.function
        def apply(grads):
            optimizer.apply_gradients(zip(grads, weights, strict=True))

        @tf.function
        def save():
            for source, target in zip(weights, saved, strict=True):
                target.assign(source)

        @tf.function
        def restore():
            for source, target in zip(saved, weights, strict=True):
                target.assign(source)

        best, best_loss, since = None, math.inf, 0
        for k in range(1, self.n_iter + 1):
            # the objective of the current weights, and their image
            loss, image, grads = gradient()
            backtrack = False
            if float(loss) < best_loss:
                best_loss, since = float(loss), 0
                if self.tv_weight > 0:
                    best = image
                if self.patience:
                    save()
            else:
                since += 1
                if self.patience and since >= self.patience:
                    # back to the weights of the lowest objective, with half the step
                    restore()
                    optimizer.learning_rate.assign(optimizer.learning_rate * 0.5)
                    since, backtrack = 0, True
            if not backtrack:
                apply(grads)
            if callback is not None and every and k % every == 0:
                callback(k, self._result(generator, z, best))
        self.final_learning_rate = float(optimizer.learning_rate.numpy())
        return self._result(generator, z, best)

    def _result(self, generator, z, best) -> np.ndarray:
        image = best if self.tv_weight > 0 and best is not None else generator(z)
        return image.numpy()[0, ..., 0].astype(np.float32)

    def _reconstruct(self, data: np.ndarray) -> np.ndarray:
        return self.fit(data)


def total_variation(image, eps: float = 1e-6):
    """Isotropic TV of a batch ``(n, h, w, 1)`` (summed), with the forward differences of
    `lpd.methods.classical.gradient`; ``eps`` smooths the norm at zero so that the
    gradient stays finite."""
    import tensorflow as tf

    dx = image[:, 1:, :-1, :] - image[:, :-1, :-1, :]
    dy = image[:, :-1, 1:, :] - image[:, :-1, :-1, :]
    # the last row and column have one difference each (the other is zero)
    last_row = tf.abs(image[:, -1, 1:, :] - image[:, -1, :-1, :])
    last_col = tf.abs(image[:, 1:, -1, :] - image[:, :-1, -1, :])
    return (tf.reduce_sum(tf.sqrt(dx * dx + dy * dy + eps * eps)) + tf.reduce_sum(last_row)
            + tf.reduce_sum(last_col))


def _ray_trafo_face(setup):
    from lpd.physics.bridge import as_tf_operator

    faces = setup.__dict__.setdefault("_dip_faces", {})
    if "ray_trafo" not in faces:
        faces["ray_trafo"] = as_tf_operator(setup.ray_trafo)
    return faces["ray_trafo"]


def iteration_curve(setup, data, truth, n_max: int, every: int = 50, *,
                    log: Callable[[str], Any] | None = None, **settings) -> dict:
    """Validation PSNR (data range 1) every ``every`` steps up to ``n_max``, per image and mean.

    Returns ``{"steps": [...], "psnr": [[...] per image], "mean": [...], "best": step}``.
    """
    steps = list(range(every, n_max + 1, every))
    curves = []
    for i, (d, t) in enumerate(zip(data, truth, strict=True)):
        curve = []
        method = DIPReconstructor(setup, n_iter=n_max, **settings)
        method.fit(d, every, lambda k, image, t=t, curve=curve: curve.append(
            metrics.psnr(t, image, 1.0)))
        curves.append(curve)
        if log is not None:
            best = int(np.argmax(curve))
            log(f"  validation image {i + 1}/{len(truth)}: best {curve[best]:.2f} dB at step "
                f"{steps[best]}, {curve[-1]:.2f} dB at {n_max}")
    mean = np.mean(curves, axis=0)
    return {"steps": steps, "psnr": curves, "mean": mean.tolist(),
            "best": steps[int(np.argmax(mean))]}


def save_dip(setup_name: str, params: dict, search: dict, path: str | Path, *,
             overwrite: bool = False) -> Path:
    """Write the chosen settings and the search behind them to ``path`` (`dip_path`)."""
    return atomic_write(path, json.dumps({"setup": setup_name, "params": params,
                                          "search": search}, indent=2) + "\n",
                        overwrite=overwrite)


def load_dip(setup, path: str | Path | None = None, *,
             log: Callable[[str], Any] | None = None) -> DIPReconstructor:
    """The deep image prior with the iteration count chosen for a set-up.

    Raises
    ------
    FileNotFoundError
        If no count was chosen for the set-up; the message gives the command.
    """
    setup = operators.as_setup(setup)
    path = Path(path) if path is not None else dip_path(setup.config.name)
    record = read_record(path, what="deep-image-prior settings", setup=setup.config.name,
                         make=f"python tools/tune_dip.py --setup {setup.config.name}")
    search = record["search"]
    params = record["params"]
    tv = f" with a TV term of weight {params['tv_weight']:.3g}" if params.get("tv_weight") else ""
    training = (f"untrained; {params['n_iter']} steps per image{tv}, chosen on "
                f"{search['n_images']} validation images")
    if log is not None:
        log(f"  dip: {record['params']} ({training})")
    return DIPReconstructor(setup, **record["params"], training=training)
