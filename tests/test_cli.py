"""Tests for the ``lpd`` command (lpd.cli)."""

import json

import pytest

from lpd.cli import main


def test_setups_lists_every_setup(capsys):
    assert main(["setups"]) == 0
    out = capsys.readouterr().out
    for name in ("ellipses", "ellipses_small", "human", "human_small"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "30 angles, data 30 x 183" in out
    assert "A / ||A||" in out


def test_unknown_setup_is_a_clear_error(capsys):
    assert main(["setups", "elipses"]) == 2
    err = capsys.readouterr().err
    assert "unknown set-up 'elipses'" in err and "ellipses" in err


def test_datasets_lists_every_source(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("ellipses", "shepp_logan", "head_ct", "pydicom_ct", "mayo", "lodopab"):
        assert name in out


def test_help_of_every_command(capsys):
    for command in ("setups", "datasets", "train"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--" in capsys.readouterr().out


def test_train_tiny_then_refuse_to_overwrite_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--method", "lgd", "--steps", "4", "--out", str(out)]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 4
    # A second fresh run into the same directory must not overwrite the first.
    assert main(args) == 2
    assert "exist" in capsys.readouterr().err
    # Resuming a finished run is allowed and changes nothing.
    assert main(["train", "--resume", "--out", str(out)]) == 0
    # A changed schedule on --resume is refused by name, never ignored; the
    # intervals may change.
    assert main(["train", "--resume", "--out", str(out), "--steps", "30"]) == 2
    assert "differs from the saved one in steps" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--checkpoint-every", "1",
                 "--validation-every", "2"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "nothere")]) == 2
    assert "no training run in" in capsys.readouterr().err
    # An unknown set-up writes nothing, so the corrected command then works.
    fresh = tmp_path / "fresh"
    assert main(["train", "--preset", "tiny", "--setup", "nope", "--out", str(fresh)]) == 2
    assert "unknown set-up 'nope'" in capsys.readouterr().err and not fresh.exists()
    for minutes in ("-5", "0", "nan"):
        assert main(["train", "--resume", "--out", str(out), "--max-minutes", minutes]) == 2
        assert "--max-minutes must be a positive number" in capsys.readouterr().err


def test_train_init_from_fine_tunes_and_names_a_bad_source(tmp_path, capsys):
    source = tmp_path / "source"
    base = ["train", "--preset", "tiny", "--method", "lgd", "--steps", "2"]
    assert main([*base, "--out", str(source)]) == 0
    tuned = tmp_path / "tuned"
    assert main([*base, "--out", str(tuned), "--init-from", str(source),
                 "--learning-rate", "1e-4"]) == 0
    config = json.loads((tuned / "config.json").read_text())
    assert config["init_from"] == str(source) and config["learning_rate"] == 1e-4
    assert config["augment"] is None
    assert main([*base, "--out", str(tmp_path / "flips"), "--augment", "flips"]) == 0
    assert json.loads((tmp_path / "flips" / "config.json").read_text())["augment"] == "flips"
    assert "initialised from" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "bad"), "--init-from", "ellipses/nothing"]) == 1
    assert "no shipped weights of that name" in capsys.readouterr().err


def test_tensorflow_start_up_noise_is_hidden_where_no_gpu_can_be_used():
    from lpd import cli

    assert cli.tensorflow_log_level(has_nvidia_driver=False) == "3"
    assert cli.tensorflow_log_level(has_nvidia_driver=True) == "1"


def test_an_interrupted_training_exits_130(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lpd import training

    monkeypatch.setattr(training, "train",
                        lambda *args, **kwargs: SimpleNamespace(status="interrupted"))
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "run")]) == 130


def test_reproduce_routes_the_experiments_with_modules_of_their_own(tmp_path, capsys):
    for experiment in ("mri", "noise", "limit"):
        assert main(["reproduce", experiment, "--train", "--out", str(tmp_path / "x")]) == 2
        assert f"lpd reproduce {experiment}: --train is not supported" in capsys.readouterr().err
    assert main(["reproduce", "limit", "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'huge' for 'limit'" in capsys.readouterr().err
    assert main(["reproduce", "elipses"]) == 2
    assert "'limit'" in capsys.readouterr().err
    for experiment in ("ellipses", "noise"):
        assert main(["reproduce", experiment, "--jobs", "2", "--out", str(tmp_path / "x")]) == 2
        assert "--jobs is for 'limit' only" in capsys.readouterr().err
    assert main(["reproduce", "limit", "--jobs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
