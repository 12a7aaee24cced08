"""Data: phantoms, synthetic training and evaluation pipelines, real CT.

- `lpd.data.phantoms`: the modified Shepp-Logan phantom and random ellipses.
- `lpd.data.pipelines`: noise models, simulation of noisy data with a set-up's
  operator, image sources and the training and validation streams.
- `lpd.data.real`: real CT that installs offline, Mayo and LoDoPaB loaders, and
  the catalogue of data sources (`lpd datasets`).

Built on `lpd.physics`; knows nothing of methods or training.
"""
