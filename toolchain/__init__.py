"""cwtool: compress a classifier for the edge without losing the cases that matter."""

import os as _os

__version__ = "0.1.0"

# onnxruntime (1.32 here) writes a device ID and a telemetry database under ~/.cache/Microsoft on every session,
# and printed a warning beside a bad input's one line where HOME cannot be written. A user's model, data and machine
# are theirs: off unless the user set it (docs/SECURITY.md).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
