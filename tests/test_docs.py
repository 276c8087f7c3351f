"""The docs cannot drift from the code silently: every `cwtool COMMAND ...` line in README.md, docs/*.md,
calibration/README.md and reproduce/README.md uses that command's own flags, every flag named in the
prose is some command's, the run-directory listing names the files a run writes (names taken from the
code), artifact names in examples are the ones a default run writes, the paths the docs point at exist,
and the install commands in README's table install (pip --dry-run --no-deps: no torch is pulled)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "calibration" / "README.md",
        ROOT / "reproduce" / "README.md"]
FLAG = re.compile(r"(?<![\w/.-])(--?[A-Za-z][A-Za-z0-9-]*)")
# flags of other tools that the docs mention in prose (pip, pytest, the reproduce scripts)
OTHER_TOOLS = {"--no-deps"}


def _commands() -> dict[str, set[str]]:
    """command name -> every option spelling it accepts (with --no-... forms and short names)."""
    import typer

    from toolchain.cli import app

    group = typer.main.get_command(app)
    root = {o for p in group.params for o in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}
    return {name: root | {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", []))}
            for name, cmd in group.commands.items()}


COMMANDS = _commands()


def _code_and_prose(text: str) -> tuple[list[str], list[str]]:
    """(lines inside ``` blocks with backslash continuations joined, lines outside them)."""
    code, prose, inside, pending = [], [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            prose.append(line)
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        code.append(pending + line)
        pending = ""
    return code, prose


def _indented_blocks(prose: list[str]) -> list[str]:
    """The `cwtool ...` synopses of 4-space indented code blocks, each with its deeper-indented continuation lines."""
    synopses: list[str] = []
    for line in prose:
        if line.startswith("    ") and line.strip().startswith("cwtool "):
            synopses.append(line.strip())
        elif synopses and line.startswith("     ") and synopses[-1] is not None:
            synopses[-1] += " " + line.strip()
        elif synopses and synopses[-1] is not None:
            synopses.append(None)  # the synopsis ended
    return [s for s in synopses if s]


def _invocations(path: Path) -> list[tuple[str, str]]:
    """(command, the rest of the line) for every `cwtool COMMAND ...` the file shows: in code blocks,
    indented synopses and inline code spans; also `compress --flag` style spans in prose."""
    text = path.read_text(encoding="utf-8")
    code, prose = _code_and_prose(text)
    found = []
    lines = code + _indented_blocks(prose)
    spans = re.findall(r"`([^`\n]+)`", "\n".join(prose))
    for line in [re.sub(r"(^|\s)#.*$", "", line) for line in lines] + spans:  # not in shell or YAML comments
        for m in re.finditer(r"(?:^|[\s;&|(\"'])(?:\S*/)?cwtool\s+([a-z]+)\b([^#\n]*)", line):
            found.append((m.group(1), m.group(2)))
    for span in spans:  # `compress --target`, `export --target`: a command named without cwtool
        m = re.match(r"^([a-z]+)\s+(--.*)$", span)
        if m and m.group(1) in COMMANDS:
            found.append((m.group(1), m.group(2)))
    return found


def _flags_in(args: str) -> list[str]:
    try:
        tokens = shlex.split(args, comments=False)
    except ValueError:  # an unbalanced quote in a synopsis: fall back to spaces
        tokens = args.split()
    flags = []
    for token in tokens:
        for part in re.split(r"[|\[\]()]", token):
            if re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*(=.*)?|-[A-Za-z]", part.split("=")[0] if part.startswith("--") else part):
                flags.append(part.split("=")[0])
    return flags


def _doc_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_every_cwtool_command_line_uses_its_own_flags(doc):
    bad = []
    invocations = _invocations(doc)
    for command, args in invocations:
        if command not in COMMANDS:
            bad.append(f"`cwtool {command}` is not a command (commands: {', '.join(sorted(COMMANDS))})")
            continue
        bad += [f"cwtool {command} has no {flag}" for flag in _flags_in(args) if flag not in COMMANDS[command]]
    assert not bad, f"{_doc_id(doc)}: " + "; ".join(dict.fromkeys(bad))


OTHER_COMMAND = re.compile(r"`(?:python3?|pip|pytest|torchrun|\./scripts/\w+|\.venv/bin/python)\b[^`]*`")


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_every_flag_in_the_prose_is_some_command_s(doc):
    """`--calibration-size` in a sentence: a flag of some cwtool command (or of the root: --debug)."""
    known = set().union(*COMMANDS.values()) | OTHER_TOOLS
    _, prose = _code_and_prose(doc.read_text(encoding="utf-8"))
    text = OTHER_COMMAND.sub("", "\n".join(line for line in prose if not line.startswith("    ")))
    flags = {f for f in FLAG.findall(text) if f.startswith("--")}
    if doc.name == "README.md" and doc.parent == ROOT:
        assert len(flags) > 20, "README.md: hardly any flags found (the extraction broke?)"
    assert not sorted(flags - known), f"{_doc_id(doc)} names flags no command has: {sorted(flags - known)}"


def test_the_reproduce_scripts_take_the_flags_their_readme_gives():
    readme = (ROOT / "reproduce" / "README.md").read_text(encoding="utf-8")
    bad = []
    for script, args in re.findall(r"python (?:reproduce/)?(\w+\.py)([^`\n]*)", readme):
        source = (ROOT / "reproduce" / script).read_text(encoding="utf-8")
        bad += [f"{script} {flag}" for flag in _flags_in(args) if f'"{flag}"' not in source]
    assert not bad, f"reproduce/README.md gives flags its scripts do not take: {bad}"


def test_the_targets_table_is_the_profiles():
    from toolchain.targets import list_targets

    text = (ROOT / "docs" / "TARGETS.md").read_text(encoding="utf-8")
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ") and "MiB |" in line)}
    profiles = {t.name: t for t in list_targets()}
    assert set(rows) == set(profiles)
    for name, (_, runtime, precision, layout, threads, ram, max_model) in rows.items():
        t = profiles[name]
        scheme = f"{t.precision} {t.int8_scheme}" if t.precision == "int8" else t.precision
        assert (runtime, precision, layout, threads, ram, max_model) == (
            f"{t.runtime} / {t.format}", scheme, t.layout, str(t.threads), f"{t.ram_mb:g} MiB", f"{t.max_model_bytes / 1e6:g} MB"), name


def _run_dir_names() -> dict[str, set[str]]:
    """What a default compress run leaves in its folder, from the names the code uses."""
    from toolchain.export import ExportJob, export_backend
    from toolchain.export.stage import DEFAULT_ARTIFACTS, ExportSettings
    from toolchain.report.plots import CAPTIONS
    from toolchain.rundir import RunDir
    from toolchain.runtimes.base import sidecar_path

    run = RunDir(Path("RUN"))
    top = {p.name + ("/" if p in (run.rounds, run.artifacts, run.plots) else "")
           for p in (run.manifest, run.log, run.rounds, run.pruned, run.calibration, run.artifacts, run.plots, run.report_json, run.report_md)}
    top.add(run.report_md.with_suffix(".html").name)
    import torch

    job = ExportJob(example=torch.zeros(1, 1, 28, 28), num_classes=10, layout=ExportSettings().layout,  # an image model's
                    calibration_x=None, calibration_method="minmax", out=run.artifacts, work=run.work)
    artifacts = set()
    for fmt, precision in DEFAULT_ARTIFACTS:
        path = export_backend(fmt).artifact_path(job, precision)
        artifacts.add(path.name)
        side = sidecar_path(path)
        if fmt == "tflite":
            artifacts.add(side.name)
    return {"top": top, "artifacts": artifacts, "plots": set(CAPTIONS)}


def test_the_run_directory_listing_is_what_a_run_writes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```\n(runs/\w+/)\n(.*?)```", readme, re.S)
    assert block, "README.md lost its run-directory listing"
    entries = {}
    current = None
    for line in block.group(2).splitlines():
        m = re.match(r"^  (\S+(?:, \S+)*)\s{2,}(.*)$", line)
        if m:
            for name in m.group(1).split(", "):
                entries[name] = m.group(2)
            current = m.group(1).split(", ")[-1]
        elif current:
            entries[current] += " " + line.strip()
    names = _run_dir_names()
    assert set(entries) == names["top"], f"listing {sorted(entries)} vs a run's {sorted(names['top'])}"
    for folder in ("artifacts", "plots"):
        said = entries[f"{folder}/"]
        missing = [n for n in names[folder] if n not in said and not (n.endswith(".tflite.json") and ".tflite.json" in said)]
        assert not missing, f"the listing's {folder}/ does not name {missing}"
    mentioned = set(re.findall(r"model_\w+\.(?:onnx|tflite)", block.group(2)))
    assert mentioned == {n for n in names["artifacts"] if not n.endswith(".json")}


def test_artifact_names_in_examples_are_a_default_run_s():
    """`runs/shirt/artifacts/model_int8_nchw.tflite` and friends: the names a run without --layout or --target writes."""
    default = _run_dir_names()["artifacts"]
    bad = []
    for doc in DOCS:
        for name in re.findall(r"artifacts/(model_[\w.]+?\.(?:onnx|tflite))\b", doc.read_text(encoding="utf-8")):
            if name not in default:
                bad.append(f"{_doc_id(doc)}: {name}")
    assert not bad, f"names no default run writes: {bad} (a default run writes {sorted(default)})"


def test_the_npz_keys_the_loader_reads_are_documented():
    from toolchain.data.sources.npz_file import SPLIT_KEYS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `file.npz`")]
    for key in ("x", "y", *SPLIT_KEYS, "class_names"):
        assert re.search(rf"\b{key}\b", row), f"README's .npz row does not name the key {key}"


# examples of files the user makes, and a file that lives in the git history only
NOT_FILES = {"calibration/my-data.npz", "docs/BENCHMARKS.md", "file.py"}
PLACEHOLDERS = {"NAME", "RUN", "OUT", "FILE"}  # calibration/NAME.npz


def test_paths_the_docs_point_at_exist():
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    bad = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for path in set(re.findall(r"(?<![\w/.-])((?:toolchain|tests|docs|reproduce|scripts|targets|calibration|\.ci)/[\w./-]*\w)", text)):
            if path.startswith(("toolchain/targets_data", "toolchain/calibration_data")) or path in NOT_FILES \
                    or any(Path(part).stem in PLACEHOLDERS for part in path.split("/")):
                continue  # where a wheel keeps targets/ and calibration/
            if not any((base / path).exists() for base in (ROOT, ROOT / "toolchain", doc.parent)):
                bad.append(f"{_doc_id(doc)}: {path}")
        for module in set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", text)) - NOT_FILES:
            if not any(m == module or m.endswith("/" + module) for m in modules):  # `stage.py` beside `export/`: any folder
                bad.append(f"{_doc_id(doc)}: `{module}`")
    assert not bad, f"paths that do not exist: {sorted(bad)}"


def test_the_layout_section_lists_the_real_top_level_folders():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    listed = set(re.findall(r"`([\w.-]+)/`", layout))
    real = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"cwtool-bench", "cwtool-demo", "cwtool-runs",
                                                                                           "runs", "build", "dist"}
    real = {n for n in real if not n.endswith(".egg-info")}
    assert listed <= real, f"the layout names folders that do not exist: {sorted(listed - real)}"
    assert real <= listed, f"the layout does not name {sorted(real - listed)}"


def test_the_install_table_has_no_dead_placeholder_and_its_commands_install(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = "\n".join(d.read_text(encoding="utf-8") for d in DOCS)
    assert "HOST/OWNER" not in docs
    table = readme.split("## Install options", 1)[1].split("\n## ", 1)[0]
    installs = re.findall(r'pip install "([^"]+)"', table)
    assert any("<your git URL>" in s for s in installs) and any(s.startswith("/path/to/cwtool[") for s in installs)
    if shutil.which("git") is None:
        pytest.skip("no git here")
    specs = [str(ROOT) + s[1:] if s.startswith(".[") else s.replace("/path/to/cwtool", str(ROOT)).replace("<your git URL>", ROOT.as_uri())
             for s in installs]
    for spec in dict.fromkeys(specs):
        # --no-deps: only cwtool itself is resolved (never torch); --no-build-isolation: no download of setuptools
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--dry-run", "-q",
                               "--no-index", spec], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"pip install {spec!r}: {done.stderr.strip()[-400:]}"
