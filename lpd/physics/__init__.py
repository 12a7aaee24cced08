"""The physics of an experiment: set-ups, its operators and noise, the ODL -> TensorFlow bridge.

- `lpd.physics.operators`: named problem set-ups (`SETUPS`, `get_setup`), the ray
  transforms of ODL with ASTRA, operator norms and system matrices.
- `lpd.physics.fourier`: MRI, the unitary Fourier transform on a sampling mask of
  k-space, and the masks.
- `lpd.physics.projector`: any of these operators on numpy arrays.
- `lpd.physics.noise`: the noise models.
- `lpd.physics.bridge`: any linear ODL operator as a batched TensorFlow op with
  exact gradients (`as_tf_operator`), and the non-linear pre-log model.

Nothing here knows about data sets, methods or training.
"""
