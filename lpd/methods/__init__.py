"""Reconstruction methods: classical (FBP, TV, Tikhonov) and learned (the networks).

- `lpd.methods.classical`: FBP, TV by PDHG and Tikhonov by CGLS, with their tuning.
- `lpd.methods.networks`: the Keras models: LPD, Learned Primal, learned gradient
  descent and FBP + U-Net, and the precision their convolutions compute in.

Built on `lpd.physics` and `lpd.data`; training and evaluation build on these.
"""
