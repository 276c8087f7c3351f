"""Full-integer int8 TFLite via litert-torch's PT2E route.

The implementation lives in toolchain.export.tflite (one converter call path for every precision);
this module is the quantize-stage entry point and names the pieces a float fallback needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from toolchain.export.tflite import export_tflite, make_pt2e_quantizer, quantizable_modules

__all__ = ["quantize_tflite", "make_pt2e_quantizer", "quantizable_modules"]


def quantize_tflite(
    model,
    example_input,
    path: str | Path,
    calibration_x: np.ndarray,
    layout: str = "NCHW",
    float_modules: Sequence[str] = (),
) -> Path:
    """int8 .tflite (int8 weights, activations, input and output) calibrated on calibration_x
    (training rows, dataset layout); float_modules (names from quantizable_modules) stay float."""
    return export_tflite(
        model, example_input, path, "int8", layout, calibration_x, float_modules=float_modules
    )
