"""Keras models for learned reconstruction: unrolled schemes, FBP + U-Net, AUTOMAP.

Every model maps a batch of data ``y`` of shape ``(batch, *range_shape, 1)``
(NHWC, float32) to a batch of images ``(batch, *domain_shape, 1)``. The models
receive the forward operator as an argument (a `lpd.tf_ops.TFOperator`, made by
`lpd.as_tf_operator`); they never build a geometry.

One parametrised class, `UnrolledReconstructor`, gives every unrolled scheme;
the named models are that class with the settings of their paper fixed:

=========================  =========================================  ============
model                      what differs                               parameters
=========================  =========================================  ============
`LearnedPrimalDual`        learned dual step, one weight set per       253 220
                           iteration, PReLU
`LearnedPrimal`            dual step replaced by ``A f - y``           125 170
`LearnedGradientDescent`   weights shared by all iterations, input     13 318
                           ``[f, A^*(A f - y), grad reg, memory]``,
                           ReLU, start from the FBP
`FBPUNet`                  U-Net on the FBP, residual (post-process)   9 699 423
`Automap`                  dense layers from data to image, then       358 523 649
                           convolutions; no operator inside [5]
=========================  =========================================  ============

(Parameter counts at the paper's settings on the ellipse set-up; they equal the
original code's.) With ``prelog_mu`` set, the unrolled schemes use the
non-linear pre-log model ``T(f) = exp(-mu A f)`` of the human-CT experiment:
the dual step sees ``T(f)`` and the primal step ``[dT(f)]^*(h) =
A^*(-mu T(f) h)`` instead of ``A f`` and ``A^* h``.

Serialisation. ``get_config()`` stores every setting and the name of the
problem set-up the operator came from (``setup``: a name of
`lpd.operators.SETUPS` or a `lpd.config.ProblemConfig` as a dict). An operator
cannot be serialised, so ``from_config(config, operator=None)`` takes it again
as an argument; when none is given it is rebuilt from ``setup`` (the only place
this module looks up a set-up, and only on load). Weights round-trip with
``get_weights``/``set_weights`` or ``save_weights``/``load_weights``;
``keras.saving.load_model`` works for models that know their set-up.

Modules. The package is split by concept; every name below is importable from
`lpd.methods.networks` itself, as before:

- `lpd.methods.networks.unrolled`: `UnrolledReconstructor`, `LearnedPrimalDual`,
  `LearnedPrimal`, `LearnedGradientDescent`.
- `lpd.methods.networks.unet`: `UNet`, `FBPUNet`.
- `lpd.methods.networks.automap`: `Automap`, `automap_parameters`.
- `lpd.methods.networks.fbp`: `FilteredBackProjection`.
- `lpd.methods.networks.layers`: the fast 3x3 convolution, PReLU and the
  convolution blocks the models are built of; `gradient_ways`,
  `set_gradient_ways` (how each convolution's gradient is computed on this CPU).
- `lpd.methods.networks.precision`: `set_precision`, `resolve_precision`,
  `cpu_has_native_bfloat16` (float32 or bfloat16 convolutions).
- `lpd.methods.networks.reconstructor`: `NetworkReconstructor`,
  `count_parameters`.
- `lpd.methods.networks._common`: the helpers they share (serialisation of
  the set-up, the operator check).

References
----------
.. [1] Adler J, Öktem O. Learned Primal-Dual Reconstruction. IEEE Trans. Med.
   Imaging 37(6):1322-1332, 2018. arXiv:1707.06474: the Learned Primal-Dual
   algorithm, its "Learned Primal" ablation, and the pre-log model of the
   human-data experiment.
.. [2] Adler J, Öktem O. Solving ill-posed inverse problems using iterative
   deep neural networks. Inverse Problems 33(12):124007, 2017.
   arXiv:1704.04058: the partially learned gradient scheme.
.. [3] Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for
   biomedical image segmentation. MICCAI 2015. arXiv:1505.04597.
.. [4] Jin KH, McCann MT, Froustey E, Unser M. Deep convolutional neural
   network for inverse problems in imaging. IEEE TIP 26(9), 2017 (FBP + U-Net).
.. [5] Zhu B, Liu JZ, Cauley SF, Rosen BR, Rosen MS. Image reconstruction by
   domain-transform manifold learning. Nature 555:487-492, 2018 (AUTOMAP).
"""

from __future__ import annotations

# The private names are those the tests read from the package, as from the module before.
from lpd.methods.networks.automap import Automap, automap_parameters
from lpd.methods.networks.fbp import FilteredBackProjection
from lpd.methods.networks.layers import _Conv2D as _Conv2D
from lpd.methods.networks.layers import _PReLU as _PReLU
from lpd.methods.networks.layers import gradient_ways, set_gradient_ways
from lpd.methods.networks.precision import (
    cpu_has_native_bfloat16,
    resolve_precision,
    set_precision,
)
from lpd.methods.networks.reconstructor import NetworkReconstructor, count_parameters
from lpd.methods.networks.unet import FBPUNet, UNet
from lpd.methods.networks.unrolled import (
    LearnedGradientDescent,
    LearnedPrimal,
    LearnedPrimalDual,
    UnrolledReconstructor,
)
from lpd.methods.networks.unrolled import _Physics as _Physics
from lpd.methods.networks.unrolled import _smoothness_gradient as _smoothness_gradient

__all__ = [
    "UnrolledReconstructor",
    "LearnedPrimalDual",
    "LearnedPrimal",
    "LearnedGradientDescent",
    "FilteredBackProjection",
    "UNet",
    "FBPUNet",
    "Automap",
    "automap_parameters",
    "count_parameters",
    "NetworkReconstructor",
    "cpu_has_native_bfloat16",
    "resolve_precision",
    "set_precision",
    "gradient_ways",
    "set_gradient_ways",
]

