"""Where training runs stand: steps, samples seen, the validation curve and the step rate.

    python tools/run_status.py runs/ellipses-lpd-paper [RUN_DIR ...] [--last 12]

Reads what `lpd train` writes into a run directory (``config.json``,
``history.jsonl``, ``checkpoints/index.json`` and the checkpoint's
``state.json``); nothing is written. Samples seen are ``batch x step`` plus those
of the weights the run started from, when their record says. The rate is taken
between the validations of the latest uninterrupted stretch of the run (a gap of
more than twice the usual time per step starts a new stretch), so it is the
rate of the current sitting, with whatever ran beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _start_samples(init: dict, depth: int = 0) -> int | None:
    """Samples seen by the weights a run started from, where their records tell."""
    if not init or depth > 10:
        return None
    if init.get("samples") is not None:
        return int(init["samples"])
    source = Path(init.get("source", ""))
    if (source / "state.json").exists() and (source / "config.json").exists():
        # a checkpoint directory: its own steps and its own start
        state = json.loads((source / "state.json").read_text())
        config = json.loads((source / "config.json").read_text())
        before = _start_samples(state.get("init") or {}, depth + 1)
        if before is not None or not state.get("init"):
            return int(config["batch_size"]) * int(state["step"]) + (before or 0)
    if (source / "manifest.json").exists():  # shipped weights, if they are still those
        record = json.loads((source / "manifest.json").read_text())
        if record.get("sha256") == init.get("sha256") and record.get("samples") is not None:
            return int(record["samples"])
    for path in sorted(Path(__file__).resolve().parents[1].glob("data/weights/*/*/manifest.json")):
        start = json.loads(path.read_text()).get("init_from") or {}
        if start.get("sha256") == init.get("sha256") and start.get("samples") is not None:
            return int(start["samples"])  # a shipped run from the same start says
    return None


def status(run: Path, last: int = 12) -> str:
    config = json.loads((run / "config.json").read_text())
    index_path = run / "checkpoints" / "index.json"
    if not index_path.exists():
        return f"{run}: no checkpoint yet"
    index = json.loads(index_path.read_text())
    state = json.loads((run / "checkpoints" / index["latest"] / "state.json").read_text())
    batch, step = int(config["batch_size"]), int(state["step"])
    init = state.get("init") or {}
    init_samples = _start_samples(init)
    samples = batch * step + (init_samples or 0)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()
               if line.strip()]
    events = [h for h in history if "event" in h]
    history = [h for h in history if "event" not in h]
    lines = [f"{run}: {config['network']['method']} on {config['setup']}, step {step} of "
             f"{config['steps']} at batch {batch}; samples seen {samples:,}"
             + ("" if not init else " (with the start's)" if init_samples is not None
                else " + those of the start (unknown)"),
             f"  best {index.get('best_psnr', float('nan')):.2f} dB at step "
             f"{index.get('best_step')}; learning rate now "
             f"{history[-1].get('learning_rate', float('nan')):.3g}" if history else "  no "
             "validation yet"]
    if history:
        shown = history[-last:]
        lines.append("  validation: " + ", ".join(f"{h['step']}:{h['psnr']:.2f}" for h in shown))
        pace = [(b["time"] - a["time"]) / (b["step"] - a["step"])
                 for a, b in zip(history[:-1], history[1:], strict=True) if b["step"] > a["step"]]
        typical = sorted(pace)[len(pace) // 2] if pace else 0.0
        stretch = [history[-1]]
        for h in reversed(history[:-1]):
            later = stretch[-1]
            if later["step"] <= h["step"] or (later["time"] - h["time"]) / (
                    later["step"] - h["step"]) > 2 * typical:
                break  # the run was stopped in between: the stretch starts after it
            stretch.append(h)
        if len(stretch) >= 2:
            hours = (stretch[0]["time"] - stretch[-1]["time"]) / 3600
            steps = stretch[0]["step"] - stretch[-1]["step"]
            if hours > 0:
                lines.append(f"  rate: {steps / hours:.0f} steps/h = {batch * steps / hours:,.0f}"
                             f" samples/h (steps {stretch[-1]['step']}-{stretch[0]['step']})")
    for e in events:
        lines.append(f"  event at step {e.get('step')}: {e['event']} (loss {e.get('loss')}, "
                     f"gradient norm {e.get('grad_norm')})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--last", type=int, default=12, help="validations to list")
    args = p.parse_args(argv)
    for run in args.runs:
        if not (run / "config.json").exists():
            print(f"{run}: not a training run (no config.json)", file=sys.stderr)
            return 2
        print(status(run, args.last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
