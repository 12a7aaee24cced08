"""Tests for lpd.reproduce and ``lpd reproduce``: the table, its files, its errors.

The runs here use the ``quick`` preset with the fast methods (FBP, Tikhonov and
a tiny learned model); the full tables come from ``lpd reproduce``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lpd import cli, training
from lpd import config as lpd_config
from lpd.evaluation import reproduce
from lpd.methods import classical
from lpd.physics import operators


@pytest.fixture()
def quick(monkeypatch):
    """A 'quick' ellipse preset with 3 held-out phantoms, to keep the tests fast."""
    spec = reproduce.EXPERIMENTS["ellipses"]
    preset = dict(spec.presets["quick"], held_out={"images": "ellipses", "n": 3, "seed": 5})
    presets = dict(spec.presets, quick=preset)
    monkeypatch.setitem(reproduce.EXPERIMENTS, "ellipses",
                        dataclasses.replace(spec, presets=presets))
    return preset


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_preset_names_a_setup_methods_and_classical_parameters():
    for name, experiment in reproduce.EXPERIMENTS.items():
        assert set(experiment.paper) <= set(reproduce.METHOD_NAMES), name
        for preset, settings in experiment.presets.items():
            assert settings["setup"] in operators.SETUPS, (name, preset)
            assert set(settings["methods"]) <= set(reproduce.METHOD_NAMES)
            classical.load_params(settings["setup"])  # raises if missing
            schedules = settings["training"]["schedules"]
            if schedules is not None:
                learned = set(settings["methods"]) & set(reproduce.LEARNED)
                assert learned <= set(schedules), (name, preset)


def test_held_out_sets_have_at_least_100_samples_in_the_default_presets():
    for experiment in reproduce.EXPERIMENTS.values():
        held = experiment.presets["default"]["held_out"]
        if held["images"] == "ellipses":
            assert held["n"] >= 100
        else:
            setup = operators.get_setup(experiment.presets["default"]["setup"])
            from lpd.data import real as realdata

            n = len(realdata.real_ct_slices(setup, held["split"])) * held["noise_draws"]
            assert n >= 100


def test_classical_table_files_and_values(tmp_path, quick):
    out = tmp_path / "run"
    lines = []
    rows = reproduce.run("ellipses", "quick", out, methods=["tikhonov", "fbp"],
                         log=lines.append)
    # Methods come back in the paper's order whatever order they were asked in.
    assert [r.method for r in rows] == ["fbp", "tikhonov"]
    for name in ("results.csv", "results.md", "reconstructions.png", "reconstructions.npz",
                 "run.json"):
        assert (out / name).is_file(), name
    table = _read_csv(out / "results.csv")
    assert tuple(table[0]) == reproduce.COLUMNS
    fbp = table[0]
    assert fbp["method"] == "fbp" and int(fbp["n_samples"]) == 3 and int(fbp["n_test"]) == 1
    assert float(fbp["paper_psnr"]) == 19.75
    # The FBP of the Shepp-Logan test case is far from perfect but not garbage.
    assert 15 < float(fbp["psnr_test"]) < 25
    saved = np.load(out / "reconstructions.npz")
    assert set(saved.files) == {"truth", "fbp", "tikhonov"}
    assert saved["fbp"].shape == (128, 128)
    assert any("writing to" in line for line in lines)
    assert json.loads((out / "run.json").read_text())["held_out"].startswith("3 random")
    assert "| FBP |" in (out / "results.md").read_text()
    # The family table: what each method needs, costs and is set to.
    families = (out / "families.md").read_text()
    assert "| FBP | analytical | validation pairs |" in families
    assert "| Tikhonov | optimisation | validation pairs |" in families
    assert "filter_type=Hamming" in families


def test_refuses_to_overwrite_without_force(tmp_path, quick):
    out = tmp_path / "run"
    reproduce.run("ellipses", "quick", out, methods=["fbp"], log=lambda _: None)
    before = (out / "results.csv").read_text()
    with pytest.raises(FileExistsError, match="--force"):
        reproduce.run("ellipses", "quick", out, methods=["fbp"], log=lambda _: None)
    assert (out / "results.csv").read_text() == before
    reproduce.run("ellipses", "quick", out, methods=["fbp", "tikhonov"], force=True,
                  log=lambda _: None)
    assert len(_read_csv(out / "results.csv")) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"experiment": "spect"}, "unknown experiment"),
    ({"methods": ["fbp", "zf"]}, "zf do\\(es\\) not apply to CT"),
    ({"preset": "huge"}, "unknown preset"),
    ({"methods": ["fbp", "sart"]}, "unknown method"),
    ({"methods": []}, "no methods"),
])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, match):
    args = {"experiment": "ellipses", "preset": "quick", **kwargs}
    with pytest.raises(ValueError, match=match):
        reproduce.run(args.pop("experiment"), args.pop("preset"), tmp_path / "x",
                      log=lambda _: None, **args)
    assert not (tmp_path / "x").exists()


def test_users_images_replace_the_held_out_set(tmp_path, quick):
    images = np.zeros((2, 128, 128), np.float32)
    images[:, 40:80, 50:90] = 0.5
    path = tmp_path / "mine.npy"
    np.save(path, images)
    rows = reproduce.run("ellipses", "quick", tmp_path / "run", methods=["fbp"],
                         images=path, log=lambda _: None)
    assert rows[0].n_samples == 2 and rows[0].psnr_test is None
    assert rows[0].psnr > 15


def test_force_replaces_the_outputs_of_a_run_as_a_whole(tmp_path, quick):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("results.csv", "training_curves.png", "notes.txt"):
        (out / name).write_text("earlier")
    with pytest.raises(FileExistsError, match=r"already holds results \(results.csv, "
                                              r"training_curves.png\)"):
        reproduce.run("ellipses", "quick", out, methods=["fbp"], log=lambda _: None)
    reproduce.run("ellipses", "quick", out, methods=["fbp"], force=True, log=lambda _: None)
    assert not (out / "training_curves.png").exists()  # stale: this run has no training
    assert (out / "notes.txt").read_text() == "earlier"  # not lpd's: kept
    assert {p.name for p in out.iterdir()} == {"notes.txt", "results.csv", "results.md",
                                               "families.md", "reconstructions.png",
                                               "reconstructions.npz", "run.json"}


def test_the_test_case_ssim_is_also_given_in_the_papers_convention(tmp_path, quick):
    from lpd import metrics

    row, = reproduce.run("ellipses", "quick", tmp_path / "run", methods=["fbp"],
                         log=lambda _: None)
    # The same SSIM at data range 2 (scikit-image's old default for float images)
    # is higher for the same images: its constants are four times larger.
    assert row.ssim_test < row.ssim_test_paper <= 1
    recon = np.load(tmp_path / "run" / "reconstructions.npz")
    assert row.ssim_test_paper == pytest.approx(
        metrics.ssim(recon["truth"], recon["fbp"], 2.0), abs=1e-6)
    assert "paper's convention" in (tmp_path / "run" / "results.md").read_text()


def test_a_failed_write_leaves_the_earlier_results_whole(tmp_path, quick, monkeypatch):
    out = tmp_path / "run"
    reproduce.run("ellipses", "quick", out, methods=["fbp"], log=lambda _: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(path, *args, **kwargs):
        if Path(path).name == "reconstructions.npz":
            raise OSError(28, "No space left on device")
        return real_write(path, *args, **kwargs)

    real_write = reproduce.atomic_write
    monkeypatch.setattr(reproduce, "atomic_write", full_disk)
    with pytest.raises(OSError, match="No space left on device.*earlier results"):
        reproduce.run("ellipses", "quick", out, methods=["fbp", "tikhonov"], force=True,
                      log=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, quick, monkeypatch):
    def read_only(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(reproduce, "_held_out", lambda *a: pytest.fail("evaluated"))
    with pytest.raises(OSError, match="cannot be written .Permission denied"):
        reproduce.run("ellipses", "quick", tmp_path / "ro", methods=["fbp"],
                      log=lambda _: None)


def test_figure_captions_score_the_image_shown(tmp_path, quick, monkeypatch):
    from lpd import metrics
    from lpd.evaluation import figures

    captured = {}
    monkeypatch.setattr(figures, "reconstruction_figure",
                        lambda truth, recons, path, **kw: captured.update(
                            truth=truth, recons=recons, **kw) or path)
    images = np.zeros((2, 128, 128), np.float32)
    images[0, 40:80, 50:90] = 0.5
    images[1, 20:100, 30:60] = 1.0  # a different image: the mean is not its score
    path = tmp_path / "mine.npy"
    np.save(path, images)
    rows = reproduce.run("ellipses", "quick", tmp_path / "run", methods=["fbp"],
                         images=path, log=lambda _: None)
    shown = captured["recons"]["FBP"]
    psnr = metrics.psnr(captured["truth"], shown)
    assert np.array_equal(captured["truth"], images[0])
    assert captured["scores"]["FBP"].startswith(f"{psnr:.2f} dB")
    assert f"{rows[0].psnr:.2f}" != f"{psnr:.2f}"
    assert "the first of 2 image(s)" in captured["title"]


@pytest.mark.parametrize("content, match", [
    (np.zeros((64, 64)), "shape"),
    (np.zeros((2, 128, 128), complex), "dtype"),
    (np.full((128, 128), np.nan), "NaN"),
    (np.zeros((0, 128, 128)), "no images"),
])
def test_bad_user_images_are_named(tmp_path, content, match):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(ValueError, match=match):
        reproduce.load_images(path, operators.get_setup("ellipses"))


@pytest.mark.parametrize("setup, content, match", [
    ("ellipses", np.full((128, 128), 200, np.uint8), r"values in \[200, 200\].*divide by 255"),
    ("ellipses", np.full((128, 128), 1e300), r"values in \[1e\+300, 1e\+300\]; expected"),
    ("ellipses", np.full((128, 128), 1e30, np.float32), "expected values in about"),
    ("human_small", -np.ones((128, 128)), "negative attenuation"),
])
def test_images_far_outside_the_setups_units_are_refused(tmp_path, setup, content, match):
    path = tmp_path / "far.npy"
    np.save(path, content)
    spec = reproduce.EXPERIMENTS["ellipses" if setup == "ellipses" else "human"]
    with pytest.raises(ValueError, match=match):
        reproduce.load_images(path, operators.get_setup(setup), spec.image_range)


def test_missing_and_corrupt_user_images(tmp_path):
    setup = operators.get_setup("ellipses")
    with pytest.raises(FileNotFoundError, match="no file"):
        reproduce.load_images(tmp_path / "absent.npy", setup)
    with pytest.raises(ValueError, match="is a directory; give one .npy file"):
        reproduce.load_images(tmp_path, setup)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="not a readable"):
        reproduce.load_images(corrupt, setup)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny LPD on the 128 x 128 ellipse set-up, trained 2 steps and exported."""
    root = tmp_path_factory.mktemp("weights")
    config = training.make_config("lpd", "ellipses", "tiny", steps=2, batch_size=1,
                                  validation_size=1, validation_every=2, checkpoint_every=2)
    training.train(config, root / "run", log=lambda _: None)
    training.export_weights(root / "run", root / "ellipses" / "lpd", command="test")
    return root


def test_learned_method_from_shipped_weights(tmp_path, quick, tiny_weights, monkeypatch):
    monkeypatch.setattr(training, "default_weights_dir", lambda: tiny_weights)
    out = tmp_path / "run"
    rows = reproduce.run("ellipses", "quick", out, methods=["lpd", "fbp"], log=lambda _: None)
    lpd_row = rows[-1]
    assert lpd_row.method == "lpd" and lpd_row.parameters > 0
    assert "step 2 of 2" in lpd_row.training or "step 0 of 2" in lpd_row.training
    assert (out / "training_curves.png").is_file()


def test_missing_or_corrupt_weights_name_the_fix(tmp_path, quick, tiny_weights, monkeypatch):
    monkeypatch.setattr(training, "default_weights_dir", lambda: tiny_weights)
    with pytest.raises(training.WeightsError, match="--train"):
        reproduce.run("ellipses", "quick", tmp_path / "a", methods=["lp"], log=lambda _: None)
    broken = tmp_path / "weights"
    (broken / "ellipses").mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_weights / "ellipses" / "lpd", broken / "ellipses" / "lpd")
    model = broken / "ellipses" / "lpd" / "model.npz"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(training, "default_weights_dir", lambda: broken)
    with pytest.raises(training.WeightsError, match="corrupt"):
        reproduce.run("ellipses", "quick", tmp_path / "b", methods=["lpd"], log=lambda _: None)


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert cli.main(["reproduce", "ellipses", "--preset", "nope",
                     "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cli.main(["reproduce", "ellipses", "--methods", "fbp,magic",
                     "--out", str(tmp_path / "x")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert cli.main(["reproduce", "ellipses", "--images", str(tmp_path / "none.npy"),
                     "--out", str(tmp_path / "y")]) == 2
    assert "no file" in capsys.readouterr().err


def test_train_flag_trains_resumably_into_out(tmp_path, quick, monkeypatch):
    spec = reproduce.EXPERIMENTS["ellipses"]
    preset = dict(spec.presets["quick"], training={"preset": "tiny",
                                                      "schedules": {"lpd": {"steps": 2}}})
    monkeypatch.setitem(reproduce.EXPERIMENTS, "ellipses", dataclasses.replace(
        spec, presets=dict(spec.presets, quick=preset)))
    out = tmp_path / "run"
    rows = reproduce.run("ellipses", "quick", out, methods=["lpd"], train=True,
                         log=lambda _: None)
    assert (out / "training" / "lpd" / "config.json").is_file()
    assert rows[0].training.endswith("of 2, batch 2, seed 1")
    # Running again (with --force) resumes the finished run instead of retraining it.
    lines = []
    reproduce.run("ellipses", "quick", out, methods=["lpd"], train=True, force=True,
                  log=lines.append)
    assert any("resuming" in line for line in lines)


def test_a_method_too_large_to_ship_is_trained_into_out_without_the_train_flag(tmp_path,
                                                                               monkeypatch):
    spec = reproduce.EXPERIMENTS["ellipses_small"]
    assert "automap" in spec.presets["default"]["trained_here"]
    preset = dict(spec.presets["quick"], held_out={"images": "ellipses", "n": 2, "seed": 5},
                  training={"preset": "tiny", "schedules": {"automap": {"steps": 2}}})
    monkeypatch.setitem(reproduce.EXPERIMENTS, "ellipses_small", dataclasses.replace(
        spec, presets=dict(spec.presets, quick=preset)))
    out = tmp_path / "run"
    lines = []
    rows = reproduce.run("ellipses_small", "quick", out, methods=["automap"],
                         log=lines.append)
    assert (out / "training" / "automap" / "config.json").is_file()
    assert any("too large to ship" in line for line in lines)
    from lpd.methods.networks import automap_parameters

    setup = operators.get_setup("ellipses_small")
    data_size = int(np.prod(setup.operator.range.shape))
    assert rows[0].parameters == automap_parameters(data_size, 64 * 64, features=4)
    assert rows[0].training.endswith("of 2, batch 2, seed 1")


def test_shipped_weights_of_the_default_presets_load_and_say_how_they_were_made():
    root = training.default_weights_dir()
    for name, experiment in reproduce.EXPERIMENTS.items():
        settings = experiment.presets["default"]
        shipped_keys = (set(settings["methods"]) & set(reproduce.LEARNED)
                        - set(settings.get("trained_here", ())))
        for key in shipped_keys:
            directory = root / settings["weights"] / key
            model = training.load_pretrained(f"{settings['weights']}/{key}")
            assert model.count_params() > 0
            config = json.loads((directory / "config.json").read_text())
            # What `reproduce --train` would train is what was shipped, and the
            # recorded command says so.
            schedule = dict(settings["training"]["schedules"][key])
            preset = schedule.pop("preset", settings["training"]["preset"])
            expected = training.make_config(key, settings["setup"], preset, seed=1, **schedule)
            shipped = lpd_config.from_dict(config)
            # Intervals do not change the weights; a warm start is recorded below.
            free = {"validation_every", "checkpoint_every", "log_every", "init_from"}
            # A warm-started stage of the training campaign (a decay of the learning
            # rate from the shipped weights, say) has a schedule of its own; the
            # network, the problem, the data and the optimiser stay the experiment's.
            stage = {"steps", "learning_rate", "seed", "precision"}
            if shipped.init_from is not None:
                free |= stage
            same = {f.name for f in dataclasses.fields(expected)} - free
            assert {f: getattr(shipped, f) for f in same} == {
                f: getattr(expected, f) for f in same}, (name, key)
            manifest = json.loads((directory / "manifest.json").read_text())
            command = manifest["command"]
            for field in sorted(stage & free):
                # ... and the recorded command says so where it differs.
                value = getattr(shipped, field)
                if value != getattr(expected, field):
                    flag = f"--{field.replace('_', '-')} "
                    assert flag in command, (name, key, field)
                    given = command.split(flag)[1].split()[0]
                    assert type(value)(given) == value, (name, key, field, given)
            assert f"--method {key}" in command and f"--preset {preset}" in command
            for field, value in schedule.items():
                if field in stage & free:  # a warm-started stage's own, checked above
                    continue
                assert f"--{field.replace('_', '-')} {value}" in command, (name, key, field)
            if shipped.init_from is not None:
                assert f"--init-from {shipped.init_from}" in command
                assert len(manifest["init_from"]["sha256"]) == 64
            assert (directory / "history.jsonl").stat().st_size > 0
            assert (directory / "train.log").stat().st_size > 0


def _ship_weights_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "ship_weights.py"
    spec = importlib.util.spec_from_file_location("ship_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_readme_table_is_the_one_the_manifests_give():
    # tools/ship_weights.py rewrites the table from the shipped files; a
    # hand edit or a forgotten re-run shows up here.
    ship_weights = _ship_weights_module()
    root = training.default_weights_dir()
    readme = (root / "README.md").read_text()
    shipped = readme.split(ship_weights._BEGIN, 1)[1].split(ship_weights._END, 1)[0]
    assert shipped.strip() == ship_weights.table(root)


def test_weights_table_names_the_source_of_a_fine_tuned_model(tmp_path):
    ship_weights = _ship_weights_module()
    directory = tmp_path / "ellipses" / "lpd"
    directory.mkdir(parents=True)
    config = training.make_config("lpd", "ellipses", "cpu", steps=2000, seed=2,
                                  learning_rate=3e-4, init_from="ellipses/lpd",
                                  augment="flips")
    (directory / "config.json").write_text(lpd_config.to_json(config))
    manifest = {"sha256": "0" * 64, "step": 1500, "training_seconds": 1800,
                "validation": {"psnr": 33.5}, "command": "lpd train --init-from ellipses/lpd",
                "init_from": {"source": "data/weights/ellipses/lpd", "sha256": "ab" * 32,
                              "step": 6000, "setup": "ellipses"}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    row = ship_weights.table(tmp_path).splitlines()[-1]
    assert "2000 steps, batch 1, seed 2, learning rate 0.0003, augment flips" in row
    assert "from ellipses weights of step 6000 (SHA-256 abababababab…)" in row
    assert "| 1500 | 33.50 on 16 random ellipses phantoms | 0.5 h |" in row


def test_weights_table_counts_the_slices_a_finite_set_validates_on(tmp_path):
    # A finite image set (brain MRI, head CT) is validated on its whole split,
    # not on validation_size random draws.
    ship_weights = _ship_weights_module()
    directory = tmp_path / "brain_mri_random4_noise0" / "lpd"
    directory.mkdir(parents=True)
    config = training.make_config("lpd", "brain_mri_random4_noise0", "cpu", steps=4000,
                                  images="brain_mri")
    (directory / "config.json").write_text(lpd_config.to_json(config))
    manifest = {"sha256": "0" * 64, "step": 4000, "training_seconds": 3600,
                "validation": {"psnr": 40.0}, "command": "lpd train"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    row = ship_weights.table(tmp_path).splitlines()[-1]
    assert "| 4000 | 40.00 on 10 brain-MRI slices | 1.0 h |" in row


def test_training_column_names_augmentation_and_the_starting_weights():
    plain = training.make_config("unet", "human_small", "cpu", steps=6000, seed=1)
    assert reproduce._training_text(plain, 5250) == "step 5250 of 6000, batch 1, seed 1"
    tuned = dataclasses.replace(plain, augment="dihedral", init_from="human_small/unet")
    assert reproduce._training_text(tuned, None) == (
        "6000 steps, batch 1, seed 1, augment dihedral, from human_small/unet")


def test_missing_automap_weights_name_the_experiment_that_trains_it():
    from lpd.training import WeightsError

    with pytest.raises(WeightsError, match="lpd reproduce ellipses_small.* trains automap"):
        reproduce._shipped("ellipses", "automap", lambda line: None)
    with pytest.raises(WeightsError, match="--methods$"):
        reproduce._shipped("ellipses", "pnp_missing", lambda line: None)
