"""`cwtool targets [NAME]`: the device profiles. No torch here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from toolchain.errors import UserError
from toolchain.report.consoles import out_console

def targets(
    name: Optional[str] = typer.Argument(None, metavar="TARGET", help="A profile name from targets/ or a path to your own .toml; omit to list all."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the profile(s) as JSON here."),
):
    """List the device profiles, or show one (a name or a path to your own TOML)."""
    from rich.table import Table

    from toolchain.io import json_text, write_named_output
    from toolchain.output_paths import check_json_replaceable, check_output_file
    from toolchain.targets import list_targets, load_target, target_export_plan

    skipped: list[str] = []
    read = [load_target(name)] if name is not None else list_targets(skipped)
    inputs = [t.path for t in read if t.path]
    check_output_file(json_out, "--json", inputs=inputs)
    check_json_replaceable(json_out, "targets")
    console = out_console()
    if name is None:
        profiles = read
        if not profiles:
            if skipped:
                raise UserError(f"no target profile loads: {skipped[0]}")
            raise UserError("no target profiles found: the targets/ folder is missing from this install")
        table = Table(title="cwtool targets (throughput figures are estimates; see each file's source)")
        table.add_column("name", no_wrap=True)
        for col in ("runtime", "format", "precision", "layout", "threads", "RAM MiB", "max model"):
            table.add_column(col, overflow="fold")
        for t in profiles:
            table.add_row(
                t.name, t.runtime, t.format, f"{t.precision} {t.int8_scheme}" if t.precision == "int8" else t.precision,
                t.layout, str(t.threads), f"{t.ram_mb:g}", f"{t.max_model_bytes / 1e6:g} MB",
            )
        console.print(table)
        for line in skipped:  # listed without it: the others are still usable
            print(f"cwtool: warning: left out of the list: {line}", file=sys.stderr)
        if json_out is not None:
            write_named_output(json_out, json_text([t.to_dict() for t in profiles]), "--json", inputs)
        return
    t = read[0]
    table = Table(title=f"target {t.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    ops = "any not rejected" if t.supported_ops is None else f"{len(t.supported_ops)}: " + ", ".join(t.supported_ops)
    rows = [
        ("description", t.description),
        ("file", t.path),
        ("runtime / format", f"{t.runtime} / {t.format}"),
        ("precision", t.precision),
        ("int8 scheme", t.int8_scheme),
        ("input layout", t.layout),
        ("threads", str(t.threads)),
        ("channel multiple", f"{t.channel_multiple} (compress --target rounds each pruned layer's channels to it)"),
        ("RAM budget", f"{t.ram_mb:g} MiB"),
        ("storage budget", f"{t.storage_mb:g} MiB"),
        ("max model bytes", f"{t.max_model_bytes:,}"),
        ("runtime overhead", f"{t.runtime_overhead_mb:g} MiB"),
        ("GMAC/s fp32 / fp16 / int8", f"{t.fp32_gmacs:g} / {t.fp16_gmacs:g} / {t.int8_gmacs:g} (estimate)"),
        ("per-inference overhead", f"{t.overhead_ms:g} ms"),
        ("throughput source", t.throughput_source),
        ("supported operators", ops),
        ("rejected operators", ", ".join(t.rejected_ops) or "-"),
        *((f"device {k}", str(v)) for k, v in t.device.items()),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if json_out is not None:
        write_named_output(json_out, json_text({**t.to_dict(), "export_plan": target_export_plan(t)}), "--json", inputs)
