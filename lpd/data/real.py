"""Real CT data: the public face of the real-CT sources (also ``lpd.realdata``).

Each source has its own module; this one re-exports their public names:

- `lpd.data.ct_units`: units, grids and DICOM reading that every source shares
  (`hu_to_attenuation`, `grid_of`, `resample_to_grid`, `read_dicom`,
  `read_dicom_hu`).
- `lpd.data.head_ct`: real human CT that installs offline, the head CT of
  ``invesalius-examples`` and the CT slices of ``pydicom-data``
  (`real_ct_slices`, `load_inv3`).
- `lpd.data.mayo`: the Mayo Clinic / AAPM low-dose CT challenge tree that users
  bring (`scan_mayo`, `mayo_slices`).
- `lpd.data.lodopab`: LoDoPaB-CT, which users bring (`LoDoPaB`, `lodopab_problem`).
- `lpd.data.catalogue`: every source, what is installed and how to get what is
  missing (`data_sources`, `describe_sources`: what ``lpd datasets`` prints).

Every loader returns an `lpd.datasets.ImageSet`, which the pipelines of
`lpd.datasets` (`lpd.datasets.training_pairs`, `lpd.datasets.fixed_set`,
`lpd.datasets.measured_pairs`) take like any other image source.
"""

from __future__ import annotations

from lpd.data.catalogue import data_sources, describe_sources
from lpd.data.ct_units import (
    grid_of,
    hu_to_attenuation,
    read_dicom,
    read_dicom_hu,
    resample_to_grid,
    source_entry,
)
from lpd.data.head_ct import (
    HEAD_CT_PATH,
    HEAD_CT_SPLITS,
    PYDICOM_CT_FILES,
    REAL_CT_SPLITS,
    load_inv3,
    real_ct_slices,
)
from lpd.data.lodopab import LODOPAB_MU_MAX, LoDoPaB, lodopab_problem
from lpd.data.mayo import MayoSlice, mayo_slices, scan_mayo

__all__ = [
    "hu_to_attenuation",
    "resample_to_grid",
    "HEAD_CT_PATH",
    "HEAD_CT_SPLITS",
    "PYDICOM_CT_FILES",
    "REAL_CT_SPLITS",
    "load_inv3",
    "real_ct_slices",
    "MayoSlice",
    "scan_mayo",
    "mayo_slices",
    "LODOPAB_MU_MAX",
    "LoDoPaB",
    "lodopab_problem",
    "data_sources",
    "describe_sources",
    "grid_of",
    "read_dicom",
    "read_dicom_hu",
    "source_entry",
]
