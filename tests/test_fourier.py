"""Tests of the MRI forward model: sampling masks, the masked unitary Fourier transform,
its noise, and the set-ups and classical methods built on it.

The bridge's exactness tests (forward and adjoint against ODL, the dot test,
gradients to second order) run on this operator in ``tests/test_tf_ops.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

odl = pytest.importorskip("odl")

from lpd import metrics  # noqa: E402
from lpd.config import SETUPS, NoiseConfig, ProblemConfig, SamplingConfig  # noqa: E402
from lpd.data import phantoms, pipelines  # noqa: E402
from lpd.methods import classical, registry  # noqa: E402
from lpd.physics import fourier, operators  # noqa: E402
from lpd.physics.projector import projector  # noqa: E402

SHAPE = (80, 96)
PATTERNS = ("radial", "random", "lines")


def _space(shape=SHAPE, **kwargs):
    return odl.uniform_discr([-1, -1], [1, 1], shape, dtype="float32", **kwargs)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("rate", [1 / 5, 1 / 4, 1 / 3])
def test_masks_measure_the_rate_and_the_centre(pattern, rate):
    mask = fourier.sampling_mask(SHAPE, SamplingConfig(pattern, rate))
    assert mask.shape == SHAPE and mask.dtype == bool
    # Radial masks come in whole spokes, lines in whole lines: within one of them.
    tolerance = {"radial": 0.02, "random": 0.5 / mask.size, "lines": 1 / SHAPE[1]}[pattern]
    assert abs(mask.mean() - rate) <= tolerance
    assert mask[SHAPE[0] // 2, SHAPE[1] // 2]  # the zero frequency
    # Denser at the centre than at the edge of k-space, as every pattern is.
    centre = mask[30:50, 36:60].mean()
    edge = np.concatenate([mask[:10].ravel(), mask[-10:].ravel()]).mean()
    assert centre > edge


def test_masks_are_deterministic_and_seeded():
    a = fourier.sampling_mask(SHAPE, SamplingConfig("random", 0.25, seed=0))
    b = fourier.sampling_mask(SHAPE, SamplingConfig("random", 0.25, seed=0))
    c = fourier.sampling_mask(SHAPE, SamplingConfig("random", 0.25, seed=1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    lines = fourier.sampling_mask(SHAPE, SamplingConfig("lines", 0.25))
    # Whole lines along x: every column is all measured or all not.
    assert np.all(lines.all(axis=0) | ~lines.any(axis=0))
    assert not a.flags.writeable  # shared between users: read-only


def test_full_mask_is_unitary_and_zero_filling_inverts_it(rng):
    space = _space(weighting=1.0)
    op = fourier.MaskedFourierTransform(space, np.ones(SHAPE, bool))
    x = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    y = op.batch_apply(x)
    assert y.shape == (2, 2 * SHAPE[0], SHAPE[1])
    np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-5)
    np.testing.assert_allclose(op.batch_apply(y, transpose=True), x, atol=1e-5)
    # The centred layout: a constant image has all its energy at the centre.
    k = fourier.complex_data(op.batch_apply(np.ones((1, *SHAPE), np.float32)))[0]
    assert abs(k[SHAPE[0] // 2, SHAPE[1] // 2]) == pytest.approx(np.sqrt(k.size), rel=1e-5)
    np.testing.assert_allclose(np.delete(np.abs(k).ravel(), k.size // 2 + SHAPE[1] // 2), 0,
                               atol=1e-3)


def _mirror(mask):
    """The mask of the frequencies -k of those of ``mask`` (index i -> (n - i) mod n)."""
    (n0, n1), (i, j) = mask.shape, np.indices(mask.shape)
    return mask[(n0 - i) % n0, (n1 - j) % n1]


def test_transpose_is_the_real_part_of_the_zero_filled_inverse(rng):
    mask = fourier.sampling_mask(SHAPE, SamplingConfig("random", 0.25))
    op = fourier.MaskedFourierTransform(_space(weighting=1.0), mask)
    y = rng.standard_normal((1, 2 * SHAPE[0], SHAPE[1])).astype(np.float32)
    k = fourier.complex_data(y)[0] * mask
    expected = np.fft.ifft2(np.fft.ifftshift(k), norm="ortho").real
    np.testing.assert_allclose(op.batch_apply(y, transpose=True)[0], expected, atol=1e-6)
    assert np.all(op.batch_apply(op.batch_apply(y, transpose=True))[:, op.support == 0] == 0)
    assert op.support.sum() == 2 * mask.sum()
    # ||W|| = 1 by the power method.
    assert projector(op).norm() == pytest.approx(1.0, rel=1e-3)


def test_a_mask_symmetric_under_k_to_minus_k_gives_a_partial_isometry(rng):
    # For a real image the coefficients at k and -k are conjugate; where a mask
    # holds both, W W^T W = W (zero filling is then the least-squares image),
    # and a frequency measured without its mirror is seen at half weight.
    mask = fourier.sampling_mask(SHAPE, SamplingConfig("random", 0.2))
    symmetric = mask | _mirror(mask)
    op = fourier.MaskedFourierTransform(_space(weighting=1.0), symmetric)
    y = op.batch_apply(rng.standard_normal((1, *SHAPE)).astype(np.float32))
    np.testing.assert_allclose(op.batch_apply(op.batch_apply(y, transpose=True)), y,
                               atol=1e-5 * np.abs(y).max())
    lonely = mask & ~_mirror(mask)
    assert lonely.any()  # the random pattern is not symmetric: no sample is wasted
    one = fourier.MaskedFourierTransform(_space(weighting=1.0), lonely & (np.cumsum(
        lonely).reshape(SHAPE) == 1))
    y = one.batch_apply(rng.standard_normal((1, *SHAPE)).astype(np.float32))
    np.testing.assert_allclose(one.batch_apply(one.batch_apply(y, transpose=True)), y / 2,
                               atol=1e-6)


def test_stacked_and_complex_data_round_trip(rng):
    k = rng.standard_normal((3, 4, 5)) + 1j * rng.standard_normal((3, 4, 5))
    stacked = fourier.stacked_data(k)
    assert stacked.shape == (3, 8, 5) and stacked.dtype == np.float32
    np.testing.assert_allclose(fourier.complex_data(stacked), k, atol=1e-6)
    with pytest.raises(ValueError, match="even number of rows"):
        fourier.complex_data(np.zeros((3, 5)))


def test_adjoint_in_weighted_spaces_is_odls(rng):
    # ODL's default weighting is the cell volume; the adjoint carries the ratio.
    space = _space((12, 10))
    mask = fourier.sampling_mask((12, 10), SamplingConfig("random", 0.5))
    op = fourier.MaskedFourierTransform(space, mask)
    x = space.element(rng.standard_normal((12, 10)).astype(np.float32))
    y = op.range.element(rng.standard_normal((24, 10)).astype(np.float32))
    assert op(x).inner(y) == pytest.approx(x.inner(op.adjoint(y)), rel=1e-5)
    assert op.adjoint.adjoint is op


def test_operator_refuses_bad_spaces_and_masks():
    with pytest.raises(ValueError, match="boolean mask of shape"):
        fourier.MaskedFourierTransform(_space(), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="boolean mask of shape"):
        fourier.MaskedFourierTransform(_space(), np.ones(SHAPE))
    with pytest.raises(TypeError, match="real 2D image space"):
        fourier.MaskedFourierTransform(odl.uniform_discr(0, 1, 8), np.ones(8, bool))
    with pytest.raises(ValueError, match="sampling pattern"):
        SamplingConfig("spiral", 0.25)
    with pytest.raises(ValueError, match="sampling rate"):
        SamplingConfig("radial", 0.0)
    with pytest.raises(ValueError, match="Gaussian noise"):
        ProblemConfig(name="x", shape=(8, 8), min_pt=(0, 0), max_pt=(1, 1),
                      noise=NoiseConfig(kind="poisson"), sampling=SamplingConfig())
    with pytest.raises(TypeError, match="SamplingConfig"):
        fourier.sampling_mask(SHAPE, {"pattern": "radial"})


def test_mri_setup_and_its_noise(rng):
    setup = operators.get_setup("brain_mri_small")
    assert setup.modality == "mri" and SETUPS["brain_mri_small"].modality == "mri"
    assert setup.operator.range.shape == (2 * 80, 96)
    assert setup.numpy.backend == "native"
    assert setup.opnorm == pytest.approx(1.0, rel=1e-3)
    images = rng.random((4, *setup.space.shape)).astype(np.float32)
    data = pipelines.simulate(setup, images, rng)
    noise = data - setup.numpy.forward(images)
    support = setup.operator.support == 1
    # Noise only on the measured coefficients, of the level of the set-up (0.1),
    # as complex image-domain noise x + l (xi_1 + i xi_2) gives through F.
    assert np.all(noise[:, ~support] == 0)
    assert np.std(noise[:, support]) == pytest.approx(0.1, rel=0.02)
    # A config round trip keeps the sampling.
    from lpd.config import from_json, to_json

    assert from_json(to_json(setup.config)) == setup.config


def test_zero_filling_and_tv_on_mri(rng):
    setup = operators.get_setup(ProblemConfig(
        name="mri_test", shape=(48, 40), min_pt=(-24, -20), max_pt=(24, 20), weighting=1.0,
        noise=NoiseConfig(kind="gaussian", relative_std=0.0, std=0.02),
        sampling=SamplingConfig("random", 0.33)))
    truth = phantoms.shepp_logan((48, 40))
    data = pipelines.simulate(setup, truth[None], rng)[0]
    zf = classical.ZeroFillingReconstructor(setup)
    np.testing.assert_allclose(zf(data), setup.numpy.transpose(data))
    tv = classical.TVReconstructor(setup, 0.02, 300)
    assert tv.initial == "zero_filling"
    assert metrics.psnr(tv(data), truth, 1.0) > metrics.psnr(zf(data), truth, 1.0) + 2
    with pytest.raises(ValueError, match="needs a ray transform"):
        classical.FBPReconstructor(setup)
    with pytest.raises(ValueError, match="zero filling is for MRI"):
        classical.ZeroFillingReconstructor("ellipses_small")
    tuned = classical.ClassicalParams(setup="mri_test").reconstructors(setup)
    assert set(tuned) == {"zf", "tv", "tikhonov"}


def test_registry_knows_which_methods_apply_to_which_modality():
    assert registry.get("zf").applies_to("mri") and not registry.get("zf").applies_to("ct")
    assert registry.get("fbp").applies_to("ct") and not registry.get("fbp").applies_to("mri")
    assert registry.get("tv").modalities == ("ct", "mri")
    with pytest.raises(ValueError, match="modalities"):
        registry.Method("x", "X", "analytical", False, "m:a", "s", modalities=("pet",))
