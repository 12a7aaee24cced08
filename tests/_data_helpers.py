"""Writers of tiny data files in the exact formats that lpd.realdata's loaders read.

Mayo/AAPM: single-slice DICOM Part 10 files (``.IMA``) with the CT image
attributes the loader relies on (rescale slope and intercept, pixel spacing,
ImagePositionPatient), one folder per patient and series. LoDoPaB-CT: HDF5
files with one float32 dataset ``data``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

MAYO_SERIES = ("full_1mm", "quarter_1mm", "full_3mm", "quarter_3mm")


def write_ct_dicom(path, pixels: np.ndarray, *, z: float = 0.0, slope="1", intercept="-1024",
                   spacing=(0.7, 0.7), patient: str = "L000") -> Path:
    """Write one CT slice as a DICOM Part 10 file, as a scanner exports it.

    ``pixels`` are the stored values (int16 or uint16); HU are
    ``pixels * slope + intercept``. ``slope`` and ``intercept`` are DICOM DS
    strings so that tests can write invalid ones (``"nan"``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.ascontiguousarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = patient
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ImagePositionPatient = [-0.5 * spacing[1] * pixels.shape[1],
                               -0.5 * spacing[0] * pixels.shape[0], float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = "3"
    ds.PixelSpacing = [str(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tests write invalid DS values on purpose
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.astype("<i2" if pixels.dtype == np.int16 else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mayo_tree(root, patients=("L067", "L096"), slices: int = 3, size: int = 512,
                    series=("full_3mm", "quarter_3mm")) -> dict:
    """Write a Mayo/AAPM-like tree; return ``{(patient, series): [(z, hu), ...]}``.

    Files are named as the challenge names them but written in an order that is
    not the slice order, so that ordering by ImagePositionPatient is tested.
    Each slice is a constant HU value, different per slice.
    """
    root = Path(root)
    written = {}
    for p, patient in enumerate(patients):
        for s, name in enumerate(series):
            entries = []
            # z descending with the file number, as a scan from head to feet.
            for k in range(slices):
                z = 100.0 - 3.0 * k
                hu = -1000 + 100 * (p * 20 + s * 7 + k)
                stored = np.full((size, size), hu + 1024, dtype=np.uint16)
                dose = "FD" if name.startswith("full") else "QD"
                file = (root / patient / name /
                        f"{patient}_{dose}_3_1.CT.0001.{k + 1:04d}.2015.12.22.IMA")
                write_ct_dicom(file, stored, z=z, slope="1", intercept="-1024",
                               patient=patient)
                entries.append((z, hu))
            written[(patient, name)] = entries
    return written


def write_lodopab(root, part: str = "train", counts=(2, 1), observations: bool = True,
                  seed: int = 0) -> dict:
    """Write LoDoPaB-CT files ``ground_truth_<part>_NNN.hdf5`` (and observations).

    ``counts`` are the samples per file (the loader is told the full count of
    the first ones). Returns ``{"ground_truth": [...], "observation": [...]}``
    with the arrays written.
    """
    import h5py

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {"ground_truth": [], "observation": []}
    for number, count in enumerate(counts):
        gt = rng.random((count, 362, 362), dtype=np.float32)
        with h5py.File(root / f"ground_truth_{part}_{number:03d}.hdf5", "w") as f:
            f.create_dataset("data", data=gt, chunks=(1, 362, 362))
        written["ground_truth"].append(gt)
        if observations:
            obs = rng.random((count, 1000, 513), dtype=np.float32)
            with h5py.File(root / f"observation_{part}_{number:03d}.hdf5", "w") as f:
                f.create_dataset("data", data=obs, chunks=(1, 1000, 513))
            written["observation"].append(obs)
    return written
