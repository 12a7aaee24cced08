"""Ship a finished training run as pretrained weights in data/weights, with its record.

Copies the run's best checkpoint (weights only), its configuration, validation
history and console log into ``data/weights/<set-up>/<method>`` with a manifest
(SHA-256, step, validation PSNR, the training command), then rewrites the table
of ``data/weights/README.md`` from every manifest found, so the README never
states a number that the files do not hold.

Run: ``python tools/ship_weights.py RUN_DIR --log RUN.log --command "lpd train ..."
[--which best|latest] [--force]``; ``--table-only`` rewrites the table alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lpd import training
from lpd.config import REAL_CT_IMAGES
from lpd.data import real as realdata
from lpd.data.brain_mri import BRAIN_MRI_SPLITS
from lpd.io import atomic_write

_BEGIN, _END = "<!-- table: begin -->", "<!-- table: end -->"


def _validation_set(config: dict) -> str:
    if config["images"] in REAL_CT_IMAGES:
        # A finite set is validated on whole: every slice of the split.
        n = sum(hi - lo for lo, hi in realdata.HEAD_CT_SPLITS["validation"])
        return f"{n} head-CT slices"
    if config["images"] == "brain_mri":
        n = sum(hi - lo for lo, hi in BRAIN_MRI_SPLITS["validation"])
        return f"{n} brain-MRI slices"
    return f"{config['validation_size']} random {config['images']} phantoms"


def table(root: Path) -> str:
    lines = ["| weights | model | schedule | convolutions in | shipped step | "
             "validation PSNR (dB) | training time | command |", "|---" * 8 + "|"]
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        directory = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        config = json.loads((directory / "config.json").read_text())
        validation = manifest.get("validation") or {}
        hours = (manifest.get("training_seconds") or 0) / 3600
        schedule = f"{config['steps']} steps, batch {config['batch_size']}, seed {config['seed']}"
        if config.get("learning_rate", 1e-3) != 1e-3:
            schedule += f", learning rate {config['learning_rate']:g}"
        if config.get("augment"):
            schedule += f", augment {config['augment']}"
        init = manifest.get("init_from")
        if init:
            # A fine-tuned model: its training time and command are this run's only.
            schedule += (f", from {init['setup']} weights of step {init['step']} "
                         f"(SHA-256 {init['sha256'][:12]}…)")
        lines.append(
            f"| `{directory.relative_to(root)}` | {config['network']['method']} | {schedule} | "
            # Weights from before the precision setting were trained in float32.
            f"{manifest.get('precision', 'float32')} | "
            f"{manifest.get('step')} | {validation.get('psnr', float('nan')):.2f} on "
            f"{_validation_set(config)} | {hours:.1f} h | "
            f"`{manifest.get('command') or ''}` |")
    return "\n".join(lines)


def rewrite_table(root: Path) -> Path:
    """Replace the table of ``root/README.md`` with the one the manifests give."""
    readme = root / "README.md"
    text = readme.read_text()
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    atomic_write(readme, f"{head}{_BEGIN}\n{table(root)}\n{_END}{tail}", overwrite=True)
    return readme


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--log", type=Path, help="the run's console output")
    parser.add_argument("--command", help="the command that trained the run")
    parser.add_argument("--which", choices=("best", "latest"), default="best")
    parser.add_argument("--force", action="store_true", help="replace shipped weights")
    parser.add_argument("--table-only", action="store_true",
                        help="ship nothing; only rewrite the table of data/weights/README.md")
    args = parser.parse_args(argv)
    root = training.default_weights_dir()
    if args.table_only:
        print(f"updated {rewrite_table(root)}")
        return 0
    if args.run_dir is None or args.log is None or args.command is None:
        parser.error("RUN_DIR, --log and --command are required (or --table-only)")

    config = json.loads((args.run_dir / "config.json").read_text())
    dest = root / config["setup"] / config["network"]["method"]
    if (dest / "model.npz").exists() and not args.force:
        print(f"{dest} holds shipped weights; pass --force to replace them", file=sys.stderr)
        return 2
    training.export_weights(args.run_dir, dest, args.which, command=args.command, log=args.log)
    print(f"shipped {args.run_dir} -> {dest}; updated {rewrite_table(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
