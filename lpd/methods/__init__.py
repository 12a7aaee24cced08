"""Reconstruction methods, one concept a module; `registry` lists them all.

- `lpd.methods.registry`: the one list of methods (key, name, family, modalities, builder).
- `lpd.methods.classical`: FBP, zero filling (MRI), TV by PDHG, Tikhonov by CGLS and the
  pseudo-inverse, with their tuning.
- `lpd.methods.lmmse`: the linear MMSE estimator of a training distribution.
- `lpd.methods.denoising`: denoising networks and their training on patches.
- `lpd.methods.pnp`: plug-and-play, a learned denoiser in a half-quadratic splitting.
- `lpd.methods.splitting`: ADMM splitting a learned regulariser from a classical TV step.
- `lpd.methods.dip`: the deep image prior, an untrained network fitted per image.
- `lpd.methods.networks`: the Keras models trained by `lpd.training`: LPD, Learned
  Primal, learned gradient descent and FBP + U-Net, and the precision their
  convolutions compute in.

Built on `lpd.physics` and `lpd.data`; training and evaluation build on these.
"""
