"""The physics of an experiment: set-ups and ray transforms, and the ODL -> TensorFlow bridge.

- `lpd.physics.operators`: named problem set-ups (`SETUPS`, `get_setup`), the ray
  transforms of ODL with ASTRA, operator norms and system matrices.
- `lpd.physics.bridge`: any linear ODL operator as a batched TensorFlow op with
  exact gradients (`as_tf_operator`), and the non-linear pre-log model.

Nothing here knows about data sets, methods or training.
"""
