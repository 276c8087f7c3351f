"""Peak memory of `cwtool evaluate` and of one `cwtool compress` round on ImageFolders of generated 224-px JPEGs:
does it grow with the number of images? (It should not: the splits hold paths and images are decoded a batch
at a time, in DataLoader workers while training.)

For each size N it makes (once) cwtool-bench/streaming/images-N: N smooth 224x224 RGB JPEGs in two classes
(class 1 carries a bright disc), and a small CNN for 3x224x224 inputs (the built-in digits-cnn, width 4) trained
five epochs by `cwtool train` on the smallest folder: compress refuses a model that detects nothing (an untrained
one answers one class for every row), and a refused run measures nothing. Then it runs, each command in a child
process of its own:

    cwtool evaluate MODEL --data images-N -p 1
    cwtool compress MODEL --data images-N -p 1 --keep-params 0.5 --epochs 1 --batch-size 32 --skip-export --time-runs 0

(keep-params 0.5 at the default rate 0.5 is one round: score, prune, retrain one epoch, the operating point on
validation, the test split at the end). Memory is measured two ways: the peak resident set of the cwtool
process itself (ru_maxrss) and the peak of the whole process tree sampled every 0.1 s as proportional set size
(PSS: DataLoader workers share the parent's pages, PSS counts each shared page once). ``--old DIR`` runs the
same evaluate with the toolchain package of another checkout (e.g. ``git archive`` of an earlier commit) for a
before/after column; sizes that would not fit in memory there are skipped.

    python reproduce/streaming_memory.py --sizes 2000 3000 20000 --compress-sizes 2000 20000 [--old /tmp/old]

Writes reproduce/results/streaming_memory.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench_summary import machine  # reproduce/ is this script's folder

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "cwtool-bench" / "streaming"
SIDE = 224
ARCH, KWARGS = "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 4}


def make_images(n: int, side: int = SIDE) -> Path:
    """N smooth RGB JPEGs (a 6x6 colour grid upsampled, plus a bright disc in class 1), made once."""
    from PIL import Image, ImageDraw

    folder = BENCH / f"images-{n}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = np.random.default_rng(n)
    for c in (0, 1):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % 2
        grid = rng.integers(30, 200, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(grid).resize((side, side), Image.BICUBIC)
        if c:
            r = int(rng.integers(side // 8, side // 3))
            x0, y0 = (int(v) for v in rng.integers(r, side - r, 2))
            ImageDraw.Draw(img).ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=(240, 240, 220))
        img.save(folder / f"class{c}" / f"{i:06d}.jpg", quality=90)
    done.write_text(str(n))
    return folder


def make_model(folder: Path) -> Path:
    """The CNN trained five epochs on ``folder`` (made once): a model compress takes."""
    path = BENCH / "cnn224-trained.pt"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "toolchain", "train", "--arch", ARCH, "--arch-kwargs", json.dumps(KWARGS), "--data",
                        str(folder), "--epochs", "5", "--lr", "0.01", "--batch-size", "32", "--out", str(path)], check=True, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return path


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(args: list[str], cwd: Path, pythonpath: str | None = None) -> dict:
    """Run ``python -m toolchain ARGS`` in a child; its exit code, seconds, peak RSS of the cwtool process
    (ru_maxrss of the largest process in the tree), peak PSS of the whole tree and its last error line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # a wrapper process of its own, so RUSAGE_CHILDREN counts this command's processes only
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)")
    t0 = time.perf_counter()
    errors = BENCH / f"stderr-{args[0]}.txt"
    with open(errors, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", wrapper, sys.executable, "-m", "toolchain", *args], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            pids = _tree(proc.pid)[1:]  # not the wrapper
            peak[0] = max(peak[0], sum(_pss(p) for p in pids))
            peak[1] = max(peak[1], len(pids))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    maxrss_kb, code = (int(v) for v in out.strip().splitlines()[-1].split())
    last = [line for line in errors.read_text(errors="replace").splitlines() if line.startswith("cwtool: ")][-1:]
    return {"exit": code, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(maxrss_kb / 1024),
            "peak_tree_pss_mb": round(peak[0] / 2**20), "processes": peak[1], **({"error": last[0]} if last else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 3000, 20000], help="image counts for evaluate")
    ap.add_argument("--compress-sizes", type=int, nargs="*", default=[2000, 20000], help="image counts for one compress round")
    ap.add_argument("--old", type=Path, help="another checkout's root: its evaluate for a before column")
    ap.add_argument("--old-max", type=int, default=3000, help="largest size run with --old (it holds every image as float32)")
    ap.add_argument("--json", type=Path, default=ROOT / "reproduce" / "results" / "streaming_memory.json")
    args = ap.parse_args()
    BENCH.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes) | set(args.compress_sizes))
    model = None
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        folder = make_images(n)
        row = {"images": n, "jpeg_mb": round(sum(f.stat().st_size for f in folder.glob("*/*.jpg")) / 1e6, 1),
               "generate_seconds": round(time.perf_counter() - t0, 1)}
        model = model or make_model(folder)  # trained on the smallest folder
        evaluate = ["evaluate", str(model), "--data", str(folder), "-p", "1"]
        if n in args.sizes:
            row["evaluate"] = measure(evaluate, ROOT)
            if args.old and n <= args.old_max:
                row["evaluate_old"] = measure(evaluate, args.old, pythonpath=str(args.old))
        if n in args.compress_sizes:
            out = BENCH / f"run-{n}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            row["compress"] = measure(["compress", str(model), "--data", str(folder), "-p", "1", "--keep-params", "0.5", "--epochs", "1",
                                       "--batch-size", "32", "--skip-export", "--time-runs", "0", "--out", str(out)], ROOT)
        rows.append(row)
        print(json.dumps(row), flush=True)
        # exit 1 is a compress whose gate failed after its round (measured); any other is a refusal or a crash: nothing measured
        refused = [f"{k} of {n:,} images: exit {row[k]['exit']} ({row[k].get('error', 'no error line')})" for k in ("evaluate", "compress")
                   if k in row and row[k]["exit"] not in ((0,) if k == "evaluate" else (0, 1))]
        if refused:
            raise SystemExit("not measured: " + "; ".join(refused))
    result = {"machine": machine(), "arch": ARCH, "arch_kwargs": KWARGS, "side": SIDE, "argv": sys.argv[1:], "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}; peak memory in MB (RSS of the cwtool process / PSS of its process tree)")
    print("| images | JPEG MB | evaluate | evaluate before | compress round | compress seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cell = lambda k: f"{r[k]['peak_rss_mb']:,} / {r[k]['peak_tree_pss_mb']:,}" if k in r else "-"  # noqa: E731
        print(f"| {r['images']:,} | {r['jpeg_mb']} | {cell('evaluate')} | {cell('evaluate_old')} | {cell('compress')} | "
              f"{r['compress']['seconds'] if 'compress' in r else '-'} |")


if __name__ == "__main__":
    main()
