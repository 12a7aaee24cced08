"""Evaluation: one scoring of any method, the results table, figures, the paper's experiments.

- `lpd.evaluation.scoring`: `evaluate` (PSNR, SSIM, run time of any
  reconstructor) and `write_results` (the table as CSV and Markdown).
- `lpd.evaluation.figures`: reconstructions side by side, training curves, MRI masks.
- `lpd.evaluation.reproduce`: the experiments of the paper behind ``lpd reproduce``.
- `lpd.evaluation.mri`: the MRI grid of Liu, Kuang & Zhang (``lpd reproduce mri``).

The names of `lpd.evaluation.scoring` are available here.
"""

from lpd.evaluation.scoring import (  # noqa: F401
    COLUMNS,
    EvaluationResult,
    ResultRow,
    __all__,  # noqa: F401
    csv_text,
    evaluate,
    write_results,
)
