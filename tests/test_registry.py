"""The registry of methods: every entry builds, and every list of methods is read from it."""

from __future__ import annotations

import pytest

from lpd import config
from lpd.methods import registry


def test_unknown_keys_are_refused_with_the_known_ones_listed():
    with pytest.raises(ValueError, match="unknown method 'sart'; choose one of fbp, zf, tv"):
        registry.get("sart")
    with pytest.raises(ValueError, match="unknown method 'tv'; choose one of unet, lgd"):
        config.NetworkConfig(method="tv")


def test_the_lists_of_methods_come_from_the_registry():
    from lpd.evaluation import reproduce

    assert config.METHODS == registry.learned_keys() == ("unet", "lgd", "lp", "lpd", "automap")
    assert tuple(reproduce.METHOD_NAMES) == tuple(registry.METHODS)
    assert reproduce.CLASSICAL == ("fbp", "zf", "tv", "tikhonov", "pinv", "lmmse", "pnp",
                                   "dip", "admm", "admm_gan")
    assert set(reproduce.LEARNED) == set(config.METHODS)
    for method in registry.METHODS.values():
        assert method.family in registry.FAMILIES


def test_every_classical_builder_is_a_reconstructor():
    from lpd.methods import classical, dip, lmmse, pnp, splitting

    for key in registry.keys(learned=False):
        build = registry.get(key).load()
        if key == "lmmse":  # a function: it estimates the moments first
            assert build is lmmse.linear_mmse and issubclass(lmmse.LinearMMSE,
                                                             classical.Reconstructor)
        elif key in ("admm", "admm_gan"):  # functions: they load the trained networks first
            assert build in (splitting.load_splitting, splitting.load_splitting_gan) and issubclass(
                splitting.SplittingReconstructor, classical.Reconstructor)
        elif key == "dip":  # a function: it reads the chosen number of steps
            assert build is dip.load_dip and issubclass(dip.DIPReconstructor,
                                                        classical.Reconstructor)
        elif key == "pnp":  # a function: it loads the denoiser and the tuned scheme
            assert build is pnp.load_pnp and issubclass(pnp.PnPReconstructor,
                                                        classical.Reconstructor)
        else:
            assert issubclass(build, classical.Reconstructor), key


def test_every_learned_builder_builds_from_its_network_config():
    pytest.importorskip("tensorflow")
    from lpd import training

    for key in registry.learned_keys():
        network = training.make_config(key, "ellipses_small", "tiny").network
        model = training.build_model(network, "ellipses_small")
        assert isinstance(model, registry.get(key).load()), key


def test_bad_entries_are_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        registry.Method("x", "X", "magic", False, "lpd.methods.classical:FBPReconstructor",
                        "")
