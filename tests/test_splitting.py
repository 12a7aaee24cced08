"""The ADMM splitting of a learned regulariser (lpd.methods.splitting) and the MRI table.

The scheme is checked on a small MRI problem with phantoms (no data package
needed): the proximity term of its TV step, a short training run, the saved
networks reloading to the same reconstructions, and clear errors.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from lpd import metrics  # noqa: E402
from lpd.config import NoiseConfig, ProblemConfig, SamplingConfig  # noqa: E402
from lpd.data import phantoms, pipelines  # noqa: E402
from lpd.methods import classical, registry, splitting  # noqa: E402
from lpd.physics import operators  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    return operators.get_setup(ProblemConfig(
        name="mri_split_test", shape=(32, 32), min_pt=(-16, -16), max_pt=(16, 16),
        weighting=1.0, noise=NoiseConfig(kind="gaussian", relative_std=0.0, std=0.05),
        sampling=SamplingConfig("random", 0.3)))


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(phantoms.random_ellipses(rng, (32, 32)), 0, 1) for _ in range(n)]
                    ).astype(np.float32)


def test_the_proximity_term_pulls_tv_towards_its_anchor(setup, rng):
    truth = phantoms.shepp_logan((32, 32))
    data = pipelines.simulate(setup, truth[None], rng)[0]
    tv = classical.TVReconstructor(setup, 0.01, 200, nonneg=True)
    anchor = np.full((32, 32), 0.3, np.float32)
    plain = tv.reconstruct(data)
    np.testing.assert_allclose(tv.reconstruct(data, anchor=anchor, anchor_weight=0.0), plain)
    pulled = tv.reconstruct(data, anchor=anchor, anchor_weight=1e4)
    assert np.abs(pulled - anchor).max() < 1e-2 < np.abs(plain - anchor).max()
    middle = tv.reconstruct(data, anchor=anchor, anchor_weight=1.0)
    assert np.linalg.norm(middle - anchor) < np.linalg.norm(plain - anchor)
    with pytest.raises(ValueError, match="needs an anchor"):
        tv.reconstruct(data, anchor_weight=1.0)
    with pytest.raises(ValueError, match="anchor must have shape"):
        tv.reconstruct(data, anchor=np.zeros(3), anchor_weight=1.0)


def test_config_is_checked():
    with pytest.raises(ValueError, match="outer_loops"):
        splitting.SplittingConfig(outer_loops=0)
    with pytest.raises(ValueError, match="rho"):
        splitting.SplittingConfig(rho=-1)
    with pytest.raises(ValueError, match="tv_weight"):
        splitting.SplittingConfig(tv_weight=0.0)
    assert splitting.SplittingConfig(tv_weight=0.1, tv_decay=0.5).mu(2) == pytest.approx(0.025)


def test_training_improves_on_tv_and_the_saved_networks_reload(setup, tmp_path,
                                                                 monkeypatch):
    config = splitting.SplittingConfig(outer_loops=2, tv_weight=0.005, initial_iter=100,
                                       z_iter=30, filters=(8, 8), patch=24, first_patches=320,
                                       later_patches=160, batch_size=16)
    method, record = splitting.train_splitting(setup, _images(12, 0), _images(4, 1), config,
                                               log=lambda line: None)
    assert [e["loop"] for e in record["loops"]] == [0, 1, 2]
    assert record["n_train"] == 24  # the images and their x-flips
    # The scheme ends above its own start (argmin J, the TV reconstruction).
    assert record["loops"][-1]["validation_psnr"] > record["loops"][0]["validation_psnr"]

    saved = splitting.save_splitting(method, record, tmp_path / "admm")
    with pytest.raises(FileExistsError):
        splitting.save_splitting(method, record, tmp_path / "admm")
    loaded = splitting.load_splitting(setup, saved)
    # It stops after the loop that was best on validation, and then equals the
    # trained scheme stopped there.
    best = max(record["loops"][1:], key=lambda e: e["validation_psnr"])["loop"]
    assert loaded.loops == best and loaded.params["loops_used"] == best
    data = pipelines.simulate(setup, _images(2, 2), np.random.default_rng(3))
    same = splitting.SplittingReconstructor(setup, method.config, method.networks, loops=best)
    np.testing.assert_allclose(loaded(data[0]), same(data[0]), atol=1e-6)
    with pytest.raises(ValueError, match="loops must be in"):
        splitting.SplittingReconstructor(setup, method.config, method.networks, loops=3)
    loops = method.reconstruct_loops(data)
    assert len(loops) == 3 and loops[0].shape == (2, 32, 32)
    assert loaded.n_parameters == 2 * (9 * 8 + 8 + 9 * 8 * 8 + 8 + 9 * 8 + 1)
    assert json.loads((saved / "splitting.json").read_text())["setup"] == "mri_split_test"
    truth = _images(2, 2)
    assert np.mean([metrics.psnr(t, loaded(d), 1.0) for t, d in zip(truth, data, strict=True)]
                   ) > 10

    other = dataclasses.replace(setup.config, name="another")
    with pytest.raises(ValueError, match="splitting networks of set-up"):
        splitting.load_splitting(operators.get_setup(other), saved)
    with pytest.raises(FileNotFoundError, match="train_splitting.py --setup"):
        splitting.load_splitting(setup, tmp_path / "missing")

    # Another set-up may run these networks, named as trained on this one; its first
    # loop takes its own tuned TV weight.
    other = dataclasses.replace(setup.config, name="another",
                                sampling=SamplingConfig("random", 0.5))
    monkeypatch.setattr(classical, "load_params",
                        lambda name: SimpleNamespace(tv_weight={"another": 0.002}[name]))
    borrowed = splitting.load_splitting(operators.get_setup(other), saved,
                                        trained_on="mri_split_test")
    assert borrowed.config.tv_weight == 0.002 and borrowed.loops == best
    assert "of mri_split_test" in borrowed.training
    assert all(np.array_equal(a, b) for n, m in zip(borrowed.networks, loaded.networks,
                                                    strict=True)
               for a, b in zip(n.get_weights(), m.get_weights(), strict=True))
    with pytest.raises(ValueError, match="splitting networks of set-up"):
        splitting.load_splitting(operators.get_setup(other), saved, trained_on="third")


def test_the_gan_variant_trains_its_generator_against_the_discriminator(setup, tmp_path):
    from lpd.methods import denoising

    critic = denoising.discriminator()
    # Eight layers: seven convolutions of the seed's widths and strides, one dense unit.
    convs = [layer for layer in critic.layers if "conv" in layer.name]
    assert [c.filters for c in convs] == [8, 64, 64, 64, 64, 64, 64]
    assert [c.strides[0] for c in convs] == [2, 2, 2, 2, 2, 1, 1]
    assert critic(np.zeros((3, 48, 40, 1), np.float32)).shape == (3, 1)
    with pytest.raises(ValueError, match="one entry per layer"):
        denoising.discriminator(filters=(8, 8), kernels=(3,), strides=(1, 1))

    config = splitting.SplittingConfig(outer_loops=1, tv_weight=0.005, initial_iter=100,
                                       z_iter=30, filters=(8, 8), patch=24, first_patches=320,
                                       later_patches=160, batch_size=16, network="gan",
                                       adversarial_weight=1e-2)
    method, record = splitting.train_splitting(setup, _images(12, 0), _images(4, 1), config,
                                               log=lambda line: None)
    assert (method.key, method.name) == ("admm_gan", "ADMM + GAN")
    assert record["loops"][-1]["validation_psnr"] > record["loops"][0]["validation_psnr"]
    saved = splitting.save_splitting(method, record, tmp_path / "admm_gan")
    loaded = splitting.load_splitting_gan(setup, saved)
    data = pipelines.simulate(setup, _images(1, 2), np.random.default_rng(3))
    np.testing.assert_allclose(loaded(data[0]), method(data[0]), atol=1e-6)
    # The plain scheme does not read the GAN's networks, nor the other way round.
    with pytest.raises(ValueError, match="holds the gan networks"):
        splitting.load_splitting(setup, saved)
    with pytest.raises(FileNotFoundError, match="--network gan"):
        splitting.load_splitting_gan(setup, tmp_path / "missing")
    assert splitting.weights_dir("x", tmp_path, "gan") == tmp_path / "x" / "admm_gan"
    with pytest.raises(ValueError, match="network must be one of"):
        splitting.SplittingConfig(network="unet")
    with pytest.raises(ValueError, match="adversarial_weight"):
        splitting.SplittingConfig(adversarial_weight=-1.0)


def test_the_method_is_in_the_registry():
    method = registry.get("admm")
    assert method.family == "plug-and-play" and method.trained and not method.learned
    assert method.load() is splitting.load_splitting
    gan = registry.get("admm_gan")
    assert gan.trained and gan.load() is splitting.load_splitting_gan


def test_the_seed_table_and_the_grid():
    from lpd.evaluation import mri

    assert len(mri.SEED_TABLE) == 18
    assert mri.SEED_TABLE[mri.Cell("radial", 4, 10)]["scae"] == (26.13, 0.70)
    assert [c.setup for c in mri.cells("default")][:2] == ["brain_mri_radial4_noise0",
                                                          "brain_mri_radial4_noise10"]
    assert len(mri.cells("full")) == 18
    for cell in mri.cells("full"):
        config = operators.as_config(cell.setup)
        assert config.sampling.rate == pytest.approx(1 / cell.rate)
        assert config.noise.std == pytest.approx(cell.noise / 100)
    with pytest.raises(ValueError, match="do\\(es\\) not apply to MRI"):
        mri._methods(["fbp"], mri.MRI.presets["default"])
    with pytest.raises(ValueError, match="unknown preset"):
        mri.cells("huge")
