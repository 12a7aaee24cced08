"""Tests for lpd.config: validation and the JSON round trip."""

import dataclasses

import pytest

from lpd import config
from lpd.physics.operators import SETUPS


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_problem_config_json_round_trip(name):
    original = SETUPS[name]
    restored = config.from_json(config.to_json(original))
    assert restored == original
    assert hash(restored) == hash(original)


def test_noise_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="noise kind"):
        config.NoiseConfig(kind="speckle")


def test_fan_beam_config_names_missing_fields():
    with pytest.raises(ValueError, match="src_radius"):
        config.ProblemConfig(name="x", shape=(8, 8), min_pt=(-1, -1), max_pt=(1, 1),
                             beam="fan", angle_range=(0, 1), det_shape=8, det_min=-1,
                             det_max=1, det_radius=2)


def test_from_dict_rejects_unknown_fields_and_types():
    data = config.to_dict(SETUPS["ellipses"])
    data["colour"] = "blue"
    with pytest.raises(ValueError, match="colour"):
        config.from_dict(data)
    with pytest.raises(ValueError, match="unknown config type"):
        config.from_dict({"__type__": "Nope"})


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SETUPS["ellipses"].num_angles = 60


def test_training_images_are_one_list_and_unknown_ones_are_refused():
    assert set(config.REAL_CT_IMAGES) < set(config.TRAINING_IMAGES)
    assert config.TrainingConfig(images="real_ct").images == "real_ct"
    with pytest.raises(ValueError, match="unknown training images 'elipses'; choose one of "
                                         "ellipses, rectangles"):
        config.TrainingConfig(images="elipses")


def test_check_positive_names_the_first_bad_field():
    import numpy as np

    from lpd.config import check_positive

    @dataclasses.dataclass
    class Settings:
        n: object = 3
        rate: object = 0.5

    check_positive(Settings(), ("n",), ("rate",))
    check_positive(Settings(n=np.int64(2), rate=np.float32(1e-3)), ("n",), ("rate",))
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            check_positive(Settings(n=bad), ("n",), ("rate",))
    for bad in (0.0, -1e-3, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="rate must be finite and > 0"):
            check_positive(Settings(rate=bad), ("n",), ("rate",))
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        config.TrainingConfig(setup="ellipses_small", steps=0)
