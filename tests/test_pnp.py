"""Plug-and-play (lpd.methods.pnp) and the denoisers it uses (lpd.methods.denoising)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from lpd.data import phantoms, pipelines  # noqa: E402
from lpd.methods import denoising, pnp  # noqa: E402
from lpd.physics import operators  # noqa: E402

TINY = pnp.DenoiserConfig(shape=(32, 32), features=8, depth=3, patch=24, batch_size=8,
                          steps=40, phantoms_per_step=2)


@pytest.fixture(scope="module")
def trained():
    return pnp.train_denoiser(TINY, log=lambda line: None)


def test_networks_keep_the_image_shape_and_start_near_the_identity():
    x = np.random.default_rng(0).random((2, 20, 12)).astype(np.float32)
    assert denoising.apply(denoising.dncnn(8, 3), x, 0.1).shape == (2, 20, 12)
    assert denoising.apply(denoising.scae((4, 4)), x).shape == (2, 20, 12)
    with pytest.raises(ValueError, match="depth >= 2"):
        denoising.dncnn(8, 1)


def test_random_patches_cut_the_same_places_of_both_stacks():
    a = np.arange(2 * 10 * 8, dtype=np.float32).reshape(2, 10, 8)
    x, t = denoising.random_patches(a, -a, 5, 4, np.random.default_rng(1))
    assert x.shape == (5, 4, 4)
    np.testing.assert_array_equal(x, -t)


def test_the_learning_rate_is_constant_or_a_cosine_to_zero():
    assert denoising.learning_rate_schedule(1e-3, 100) == 1e-3
    cosine = denoising.learning_rate_schedule(1e-3, 100, "cosine")
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100, 200)],
                               [1e-3, 5e-4, 0, 0], atol=1e-9)
    with pytest.raises(ValueError, match="unknown decay 'linear'"):
        denoising.learning_rate_schedule(1e-3, 100, "linear")
    with pytest.raises(ValueError, match="unknown decay"):
        pnp.DenoiserConfig(decay="step")


def test_the_denoiser_learns_to_denoise(trained):
    network, record = trained
    # Well above the noisy input at the largest level after a few dozen steps of a
    # tiny network, and better than before training.
    assert record["psnr_after"]["0.1"] > record["psnr_noisy"]["0.1"] + 2
    assert record["psnr_after"]["0.1"] > record["psnr_before"]["0.1"] + 1


def test_denoiser_round_trip_and_missing_files(trained, tmp_path):
    network, record = trained
    pnp.save_denoiser(network, record, tmp_path / "d")
    with pytest.raises(FileExistsError):
        pnp.save_denoiser(network, record, tmp_path / "d")
    loaded, manifest = pnp.load_denoiser(tmp_path / "d")
    x = np.random.default_rng(2).random((1, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(denoising.apply(loaded, x, 0.05),
                               denoising.apply(network, x, 0.05), atol=1e-6)
    assert manifest["n_parameters"] == network.count_params()
    with pytest.raises(FileNotFoundError, match="train_pnp.py"):
        pnp.load_denoiser(tmp_path / "none")


def test_the_x_step_solves_its_normal_equations(trained, rng):
    setup = operators.get_setup("ellipses_small")
    method = pnp.PnPReconstructor(setup, trained[0], cg_iter=200)
    proj = setup.numpy
    y = pipelines.simulate(setup, phantoms.shepp_logan((64, 64))[None], rng)[0]
    z = rng.random((64, 64)).astype(np.float32)
    rhs = proj.transpose(y)
    x = method._x_step(np.zeros_like(z), z, rhs, 0.3)
    residual = proj.transpose(proj.forward(x)) + 0.3 * x - (rhs + 0.3 * z)
    assert np.linalg.norm(residual) < 1e-3 * np.linalg.norm(rhs + 0.3 * z)


def test_reconstruction_and_the_tuned_scheme_on_disk(trained, tmp_path, rng):
    setup = operators.get_setup("ellipses_small")
    y = pipelines.simulate(setup, phantoms.shepp_logan((64, 64))[None], rng)[0]
    method = pnp.PnPReconstructor(setup, trained[0], strength=1e-4, n_iter=5)
    out = method(y)
    assert out.shape == (64, 64) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert method.params["n_iter"] == 5 and method.n_parameters == trained[0].count_params()
    with pytest.raises(ValueError, match="strength"):
        pnp.PnPReconstructor(setup, trained[0], strength=0.0)

    root = tmp_path / "weights"
    pnp.save_denoiser(trained[0], trained[1], pnp.denoiser_dir("ellipses", root))
    path = pnp.pnp_path("ellipses_small", root)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"setup": "ellipses_small", "denoiser": "ellipses",
                                "params": {"strength": 1e-4, "level_start": 0.1,
                                           "level_end": 0.01, "n_iter": 5,
                                           "ensemble": "periodic"},
                                "search": {"n_images": 4}}))
    loaded = pnp.load_pnp(setup, path)
    assert loaded.ensemble == "periodic"
    np.testing.assert_allclose(loaded(y), out, atol=1e-5)
    record = json.loads(path.read_text())
    del record["params"]["ensemble"]  # a record from before the self-ensemble: run as tuned
    path.write_text(json.dumps(record))
    assert pnp.load_pnp(setup, path).ensemble == "none"
    with pytest.raises(ValueError, match="plug-and-play scheme of set-up"):
        pnp.load_pnp("ellipses", path)
    with pytest.raises(FileNotFoundError, match="train_pnp.py --setup ellipses"):
        pnp.load_pnp("ellipses", tmp_path / "nothing.json")


def _ramp_denoiser(x, training=False):
    """A 'denoiser' that is no symmetry's friend: it adds a ramp along the first axis."""
    ramp = np.linspace(0.0, 1.0, x.shape[1], dtype=np.float32)[None, :, None, None]
    return x[..., :1] + ramp


def _equivariant_denoiser(x, training=False):
    return 0.5 * x[..., :1] + x[..., 1:]  # half the image plus the level


def test_the_full_self_ensemble_is_equivariant_and_the_periodic_one_cycles(rng):
    setup = operators.get_setup("ellipses_small")
    x = rng.random((64, 64)).astype(np.float32)
    full = pnp.PnPReconstructor(setup, _ramp_denoiser, ensemble="full")
    periodic = pnp.PnPReconstructor(setup, _ramp_denoiser, ensemble="periodic")
    plain = pnp.PnPReconstructor(setup, _ramp_denoiser, ensemble="none")
    out = full.denoise(x, 0.05, 3)
    for j in range(8):
        moved = full.denoise(pipelines.symmetry(x, j), 0.05, 3)
        np.testing.assert_allclose(moved, pipelines.symmetry(out, j), atol=1e-6)
    # The ramp's symmetrised mean is a constant 0.5 in every pixel.
    np.testing.assert_allclose(out, x + 0.5, atol=1e-6)
    # Iteration k uses symmetry k mod 8 only, and the eight iterations average to the full one.
    cycle = [periodic.denoise(x, 0.05, k) for k in range(8)]
    np.testing.assert_allclose(np.mean(cycle, axis=0), out, atol=1e-6)
    np.testing.assert_array_equal(periodic.denoise(x, 0.05, 9), cycle[1])
    np.testing.assert_allclose(cycle[0], plain.denoise(x, 0.05, 5), atol=1e-6)
    assert not np.allclose(cycle[1], cycle[0])
    # An equivariant denoiser gives the same image whatever the ensemble.
    for ensemble in pnp.ENSEMBLES:
        method = pnp.PnPReconstructor(setup, _equivariant_denoiser, ensemble=ensemble)
        np.testing.assert_allclose(method.denoise(x, 0.05, 6), 0.5 * x + 0.05, atol=1e-6)
    with pytest.raises(ValueError, match="unknown ensemble"):
        pnp.PnPReconstructor(setup, _ramp_denoiser, ensemble="mean")
