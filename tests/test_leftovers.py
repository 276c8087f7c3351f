"""What a long run or a helper process leaves behind (a reviewer's soak of compress, verify and bench): memory kept with
every round's model, core files of the load probe's expected crashes, a child that ignores the stop signals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_trained_model_keeps_no_gradients(digits_dataset):
    """The last step's gradients stayed on each round's model, kept for the ticket choice: as much memory again as the
    weights, every round."""
    from toolchain.models import registry
    from toolchain.models.train import TrainConfig, train

    model = train(registry.create("digits-cnn"), digits_dataset.x_train[:256], digits_dataset.y_train[:256],
                  TrainConfig(epochs=1, batch_size=64, seed=0))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(not Path("/proc/sys/kernel/core_pattern").is_file()
                    or not Path("/proc/sys/kernel/core_pattern").read_text().startswith("core"),
                    reason="core files go to a program here, not to the working folder")
def test_the_load_probe_s_expected_crash_leaves_no_core_file(tmp_path):
    """A damaged .tflite crashes the probe child by design: with core dumps on (ulimit -c unlimited), each run left an
    18 MB core in the user's folder."""
    pytest.importorskip("litert_torch")
    import resource

    import numpy as np
    import torch

    from toolchain.export.tflite import export_tflite
    from toolchain.models import registry

    torch.manual_seed(0)
    x = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    source = Path(export_tflite(registry.create("digits-cnn").eval(), torch.from_numpy(x[:1]), tmp_path / "m8.tflite",
                                "int8", "NHWC", calibration_x=x)).read_bytes()
    probe = ("import sys\nfrom ai_edge_litert.interpreter import Interpreter\ntry:\n"
             "    Interpreter(model_content=open(sys.argv[1], 'rb').read()).get_tensor_details()\nexcept Exception:\n    pass\n")
    work = tmp_path / "work"
    work.mkdir()
    damaged = work / "crash.tflite"
    for offset in range(12, 28):  # the root table's fields, as in test_fuzz_artifacts: one of them crashes LiteRT
        data = bytearray(source)
        data[offset] = 0
        damaged.write_bytes(bytes(data))
        if subprocess.run([sys.executable, "-c", probe, str(damaged)], capture_output=True, cwd=tmp_path,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0))).returncode < 0:
            break
    else:
        pytest.skip("no byte there crashes this LiteRT as it loads")
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        from toolchain.errors import UserError
        from toolchain.runtimes import load_runner
        try:
            load_runner("crash.tflite")
        except UserError as e:
            print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert "crashes the LiteRT runtime" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert sorted(p.name for p in work.iterdir()) == ["crash.tflite"]
