"""report.html and the plots, on a made-up report (no run needed): self-contained page, integer count
ticks, no bars of nothing, the budget and the dense model marked; the fit verdict in words."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest

from toolchain.report.html import render_html


def _evaluation(fn: int, fp: int, n: int = 10) -> dict:
    confusion = np.diag([20] * n)
    confusion[3, 3] -= fn
    confusion[3, 5] += fn  # class 3's misses go to 5
    confusion[3, 3] -= 0
    confusion[8, 8] -= fp
    confusion[8, 3] += fp  # class 8's samples taken for 3
    return {"accuracy": float(np.trace(confusion) / confusion.sum()), "confusion": confusion.tolist(),
            "protected": [{"class": 3, "fn": fn, "fp": fp, "auc": 0.99}]}


def made_up_report(fn_after: int = 2, fp_after: int = 0) -> dict:
    rounds = [{"stage": "prune_round", "round": r, "params": p, "macs": 10 * p, "offsets": {"3": 0.1}, "within_budget": True,
               "val": {"accuracy": 0.97 - 0.01 * r, "protected": [{"class": 3, "fn": r - 1, "fp": r % 2, "auc": 0.99}]}}
              for r, p in ((1, 30_000), (2, 15_000), (3, 7_500))]
    return {
        "protected": [3], "class_names": [str(i) for i in range(10)],
        "config": {"max_fn_increase": 1, "max_accuracy_drop": 0.02},
        "data": {"name": "digits", "sizes": {"test": 269}},
        "gate": {"passed": True, "reasons": [], "budget": {"max_fn_increase": 1, "max_accuracy_drop": 0.02}},
        "baseline": {"params": 60_000, "val": {"accuracy": 0.98, "protected": [{"class": 3, "fn": 0, "fp": 1}]},
                     "test": _evaluation(0, 0)},
        "stages": [*rounds, {"stage": "shrunk", "round": 2, "path": "pruned.pt", "params": 15_000, "test": _evaluation(fn_after, fp_after)}],
        "artifacts": [{"path": "artifacts/model_int8.onnx", "format": "onnx", "precision": "int8", "bytes": 1234, "runtime": "onnxruntime",
                       "evaluation": _evaluation(fn_after, fp_after), "gate": {"passed": True}}],
    }


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """Every figure plot_report draws, kept open for inspection (name -> figure)."""
    from toolchain.report import plots

    kept = {}

    def keep(fig, path):
        fig.canvas.draw()
        kept[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _bars(ax):
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_plots_mark_budget_and_dense_model_with_integer_ticks_and_no_empty_bars(figures, tmp_path):
    from toolchain.report.plots import plot_report

    names = [p.name for p in plot_report(made_up_report(fn_after=2, fp_after=0), tmp_path)]
    assert names == ["rounds.png", "ledger.png", "confusion.png"]
    fn_ax = figures["rounds.png"].axes[0]
    labels = [t.get_text() for t in fn_ax.get_legend().get_texts()]
    assert "dense model FN" in labels and "FN budget (dense + 1)" in labels and "shipped ticket" in labels
    assert any(line.get_linestyle() == ":" and list(line.get_ydata()) == [1, 1] for line in fn_ax.get_lines())  # dense 0 + 1
    assert [t.get_text() for t in fn_ax.get_xticklabels()] == ["7.5k", "15k", "30k", "60k"]  # a tick at every model
    assert fn_ax.get_xlim()[0] > fn_ax.get_xlim()[1]  # the dense model on the left, rounds going right
    for name in ("rounds.png", "ledger.png", "confusion.png"):
        for ax in figures[name].axes:
            if ax.get_ylabel().endswith(("count", "samples")):
                ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
    ledger = figures["ledger.png"].axes[0]
    assert "FP (false alarms): 0 for every model" in ledger.get_title()  # named, not drawn as bars of nothing
    assert [round(b.get_height()) for b in _bars(ledger)] == [0, 2, 2]  # FN bars only: dense 0, pruned 2, the file 2
    missed, alarms = figures["confusion.png"].axes[:2]
    assert [t.get_text() for t in missed.get_xticklabels()] == ["class 5"]  # only classes with a count, before or after
    assert "none, before or after" in [t.get_text() for t in alarms.texts]


def test_plot_legends_cover_no_marker_and_a_failed_run_s_ticket_is_not_called_shipped(figures, tmp_path):
    """A sign-off reviewer: rounds.png's legend covered the dense model's markers, its FN line hid under the FP line where
    both were 0, a failed run's ticket was circled as "shipped ticket", ledger.png's x axis had no label, and a confusion
    title ran past the figure's edge."""
    from toolchain.report.plots import plot_report

    plot_report(made_up_report(fn_after=2, fp_after=0), tmp_path)
    fig = figures["rounds.png"]
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert legend.y1 <= frame.y0, (legend, frame)  # below the axes, over none of its markers
    fn_ax = fig.axes[0]
    fn_line, fp_line = (next(line for line in fn_ax.get_lines() if line.get_label() == label) for label in ("FN (missed)", "FP (false alarms)"))
    assert fn_line.get_zorder() > fp_line.get_zorder() and fp_line.get_markerfacecolor() == "none"
    assert figures["ledger.png"].axes[0].get_xlabel() == "model or file"
    failed = made_up_report()
    failed["promise"] = {"met_on_val": False}
    plot_report(failed, tmp_path)
    labels = [t.get_text() for t in figures["rounds.png"].axes[0].get_legend().get_texts()]
    assert "the run's ticket (not to ship: the run failed)" in labels and "shipped ticket" not in labels, labels


def test_html_is_one_self_contained_page_with_the_plots_embedded(tmp_path):
    from toolchain.report.markdown import render_report
    from toolchain.report.plots import plot_report

    report = made_up_report(fn_after=1, fp_after=1)
    report["class_names"][3] = "<script>alert(1)</script>"  # from a data file: text, never markup
    plots = plot_report(report, tmp_path)
    page = render_html(render_report(report), [(p, p.stem) for p in plots], "cwtool compress report")
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r"<script|\bhref=|src=\"(?!data:)|url\(|@import", page)  # nothing to fetch, nothing to run
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<table>" in page and "<th>model</th>" in page and "<strong>Gate: PASSED</strong>" in page


def test_a_class_name_is_text_in_report_md_not_html():
    """report.md put a data file's class name '<script>alert(1)</script>' in as raw HTML (report.html and verify's
    Markdown escaped it; another Markdown renderer than GitHub's runs it): a security reviewer's finding."""
    from toolchain.report.export_markdown import render_export_report
    from toolchain.report.markdown import render_report

    report = made_up_report(fn_after=1, fp_after=1)
    report["class_names"][3] = "<script>alert(1)</script>"
    report["gate"]["reasons"] = ["class 3 (<img src=x onerror=alert(1)>): FN 1 > 0"]
    markdown = render_report(report)
    assert "\\<script>alert(1)\\</script>" in markdown and "\\<img src=x" in markdown
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", markdown), markdown  # no tag opens anywhere
    assert "<=" in markdown or "<" not in markdown.replace("\\<", "")  # comparisons stay as written
    exported = render_export_report({**report, "artifacts": [], "budget": report["gate"]["budget"],
                                     "model": {"path": "m.pt", "kind": "checkpoint", "params": 1, "sha256": "0" * 64},
                                     "data": {**report["data"], "test_rows_sha256": "1" * 64}})
    outside_code = re.sub(r"`[^`\n]*`", "", exported)  # a code span shows its text as written, in any renderer
    assert "\\<script>" in exported and not re.search(r"(?<!\\)<[A-Za-z/!?]", outside_code)
    page = render_html(markdown, [], "t")  # the escape is the Markdown's: the page shows the name, not a backslash
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\\&lt;" not in page


def _reports_naming(name: str) -> tuple[str, str]:
    """report.md and export.md of a made-up run whose protected class 3 is named ``name``, in a gate reason too."""
    from toolchain.report.export_markdown import render_export_report
    from toolchain.report.markdown import render_report

    report = made_up_report(fn_after=1, fp_after=1)
    report["class_names"][3] = name
    report["gate"]["reasons"] = [f"class 3 ({name}): FN 1 > 0"]
    exported = render_export_report({**report, "artifacts": [], "budget": report["gate"]["budget"],
                                     "model": {"path": "m.pt", "kind": "checkpoint", "params": 1, "sha256": "0" * 64},
                                     "data": {**report["data"], "test_rows_sha256": "1" * 64}})
    return render_report(report), exported


_HOSTILE_NAMES = ["\\<script>alert(2)</script>", "a\\`<img src=x onerror=alert(3)>`", "```<iframe src=x>",
                  "`` <img src=y onerror=alert(4)> ``", "\\\\<svg onload=alert(5)>", "x`y\\`<object data=z>",
                  "![x](http://evil.example/p.png)", "[x](javascript:alert(6))", "<1@evil.example>"]


@pytest.mark.parametrize("name", _HOSTILE_NAMES)
def test_a_class_name_opens_no_tag_in_a_commonmark_renderer(name):
    """A name starting with a backslash (the escape became '\\\\<': an escaped backslash, then a live tag) or with
    backticks of its own (a code span that ends elsewhere in a renderer than where cwtool split it) opened a tag in
    report.md, and an image, a link or an e-mail autolink passed: reviewers of the escape. Rendered here by markdown-it
    (CommonMark, raw HTML allowed, every link target accepted as a renderer without a URL check does; rich brings it)."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark")
    renderer.validateLink = lambda url: True
    for markdown in _reports_naming(name):
        page = renderer.render(markdown)
        assert not re.search(r"<(script|img|iframe|svg|object|a)\b", page), page
        html_page = render_html(markdown, [], "t")
        assert not re.search(r"<(script|img|iframe|svg|object|a)\b", html_page)
        assert "class 3 (" + name + ")" in html.unescape(re.sub(r"<[^>]+>", "", html_page))  # shown as written


_NAMES_WITH_MARKUP = ["**bold** _under_ ~~strike~~", "name with `backticks` and ``double``", "trailing \\", "&amp; co",
                      "| x |", "a\\<b", "[link](x)", "snake_case_name"]


@pytest.mark.parametrize("name", _NAMES_WITH_MARKUP)
def test_a_class_name_with_markup_reads_as_written_in_both_reports(name):
    """report.md escaped only '<', '](' and '|' in a class name: a renderer showed '**bold**' bold, '&amp;' as '&' and lost
    a trailing backslash, and report.html turned backticks into code (a reviewer of the reports)."""
    from markdown_it import MarkdownIt

    for markdown in _reports_naming(name):
        for page in (MarkdownIt("commonmark").enable("table").render(markdown), render_html(markdown, [], "t")):
            text = html.unescape(re.sub(r"<[^>]+>", "", page))
            assert f"Protected classes: 3 ({name})" in text and f"class 3 ({name}): FN 1 > 0" in text, page
            assert "<strong>bold</strong>" not in page and "<del>" not in page and "<code>backticks" not in page


@pytest.mark.parametrize("name, shown", [("Shirt", "Shirt"), ("<b>", "3"), ("a\\<b", "3"), ("x`y", "'x`y'"), ("[a](b)", "3")])
def test_the_verify_command_export_md_gives_pastes_as_the_class(name, shown):
    """With the escape inside code spans, a class named '<b>' was given as "-p '\\<b>'" in export.md's command (a wrong
    class once pasted): such a name is given by its index; a backtick no longer ends the command's code span."""
    from markdown_it import MarkdownIt

    from toolchain.report.export_markdown import render_export_report

    report = made_up_report(fn_after=1, fp_after=1)
    report["class_names"][3] = name
    exported = render_export_report({**report, "artifacts": [], "budget": report["gate"]["budget"],
                                     "model": {"path": "m.pt", "kind": "checkpoint", "params": 1, "sha256": "0" * 64},
                                     "data": {**report["data"], "test_rows_sha256": "1" * 64}})
    commands = re.findall(r"<code>(cwtool verify [^<]*)</code>", html.unescape(MarkdownIt("commonmark").render(exported))
                          .replace("&lt;", "<"))
    assert len(commands) == 2, exported
    assert all(f" -p {shown} " in command for command in commands), commands


def test_markdown_subset_becomes_html():
    page = render_html("# Title\n\nA **bold** `a|b` & <x>.\n\n- one\n- two\n\n| a | n |\n|---|--:|\n| `x\\|y` | 3 |\n", [], "t")
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page and "<code>a|b</code>" in page
    assert "&amp; &lt;x&gt;" in page and "<ul><li>one</li><li>two</li></ul>" in page
    assert '<td class=""><code>x|y</code></td><td class="num">3</td>' in page


def test_fit_verdict_in_words():
    from toolchain.report.fit import fit_lines, fit_sentence

    report = made_up_report()
    checks = {"bytes": {"value": 60_000_000, "limit": 50_000_000}, "memory": {"estimate_bytes": 30 << 20, "limit": 512 << 20},
              "operators": {"used": ["Conv", "Gemm", "Custom"], "unsupported": [], "rejected": ["Custom"]}}
    report["artifacts"][0]["fit"] = {"fits": False, "reasons": ["model is 60,000,000 bytes, over max_model_bytes 50,000,000"],
                                     "warnings": ["precision int8, the profile asks for fp32"], "checks": checks,
                                     "estimated_latency": {"estimate_ms": 1.5, "precision": "int8", "gmacs": 24.0, "threads": 4,
                                                           "macs": 1_000_000, "macs_source": "the shipped torch model (pruned.pt)",
                                                           "note": "estimate: MACs / GMAC/s"}}
    report["target"] = {"name": "raspberry-pi-4", "description": "a Pi", "fits": False, "files": 1, "files_fitting": 0,
                        "verdict": "does not fit: too big", "throughput_source": "datasheet estimate", "memory_note": "estimate: weights"}
    text = "\n".join(fit_lines(report))
    assert "## Target raspberry-pi-4: **does not fit**" in text
    assert "over max_model_bytes" in text and "60,000,000 (50,000,000)" in text and "30.0 MiB (512.0 MiB)" in text
    assert "not supported: Custom" in text and "1.5 ms (int8, 24 GMAC/s, 4 threads)" in text
    assert "from the shipped torch model (pruned.pt)" in text and "throughput: datasheet estimate" in text
    assert "precision int8, the profile asks for fp32" in text
    assert fit_sentence(report) == "target raspberry-pi-4: does NOT fit; 0 of 1 files fit (does not fit: too big)"
    assert fit_lines({"artifacts": []}) == [] and fit_sentence({}) is None
    # --skip-export with a --target (its kernel block shaped the pruning): "does NOT fit; 0 of 0 files fit" said nothing true
    skipped = {"target": {"name": "raspberry-pi-4", "fits": False, "files": 0, "files_fitting": 0, "verdict": "no files to check"}}
    assert fit_sentence(skipped) == "target raspberry-pi-4: no file to check (none was written)"
    assert fit_lines(skipped)[1] == "## Target raspberry-pi-4: no file to check" and "does not fit" not in "".join(fit_lines(skipped))
    # files that fit the device, from a run whose gate failed: "fits" alone read as a go (a new user's finding)
    from toolchain.report.fit import fit_style

    report["artifacts"][0]["fit"]["fits"] = True
    report["target"].update(fits=True, files_fitting=1, verdict="fits")
    report["gate"] = {"passed": False}  # a failed int8 file alone: its fp32 twin is still recommended, nothing to add
    report["deploy"] = {"choices": [{"format": "onnx", "file": "artifacts/model_fp32.onnx"}]}
    assert fit_sentence(report) == "target raspberry-pi-4: fits; 1 of 1 files fit" and fit_style(report) == "green"
    report["deploy"] = {"choices": [{"format": "onnx", "file": None, "why": "the run did not keep the FN promise"}]}
    assert fit_sentence(report) == ("target raspberry-pi-4: fits; 1 of 1 files fit (the device's limits only: no file is "
                                    "recommended)") and fit_style(report) == "yellow"
    assert "## Target raspberry-pi-4: fits (the device's limits only: no file is recommended)" in "\n".join(fit_lines(report))


def test_a_round_outside_the_budget_says_which_budget_it_missed():
    """A rounds table row read "FN 0 ... within budget: no": the reason (a confidence of 0.458 against 0.95) was only in
    compress.log."""
    from toolchain.report.markdown import render_report

    report = made_up_report()
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    rounds[1]["within_budget"] = False
    rounds[1]["val"]["promise"] = {"3": {"confidence": 0.458, "confidence_target": 0.95}}
    rounds[2]["within_budget"] = False  # accuracy 0.94 against 0.98 - 0.02
    rows = [line for line in render_report(report).splitlines() if line.startswith("| 2 | 15,000 |") or line.startswith("| 3 | 7,500 |")]
    assert rows[0].endswith("| no: class 3 confidence 0.458 < 0.95; accuracy 0.9500 < 0.9600 |"), rows
    assert rows[1].endswith("| no: accuracy 0.9400 < 0.9600 |"), rows


def test_report_md_ends_with_its_terms_and_the_console_s_copy_goes_without():
    """FN, offset, ticket, MACs and "the unguarded point" were used and never said (a reader of report.md alone: an auditor,
    a clinician); "which may miss all 0 allowed" did not parse."""
    from toolchain.report.markdown import render_report
    from toolchain.report.promise_words import promise_lines

    markdown = render_report(made_up_report())
    terms = markdown[markdown.index("## Terms"):]
    assert "**FN** (false negative)" in terms and "**unguarded point**" in terms and "**MACs**" in terms and "**ticket**" in terms
    assert "**AUC**" in terms and "**int8**" in terms and "**Logit**" in terms  # used in every report, said nowhere (a sign-off reviewer)
    assert "## Terms" not in render_report(made_up_report(), terms=False)
    assert "removing channels and retraining" in terms
    weights = render_report({**made_up_report(), "config": {**made_up_report()["config"], "granularity": "weight"}})
    assert "removing weights and retraining" in weights[weights.index("## Terms"):]
    entry = {"n": 30, "n_new": 30, "fn": 0, "dense_fn": 0, "b": 0, "c": 0, "confidence": 0.96, "confidence_target": 0.95,
             "budget": 0, "margin_fn": 0, "fp": 2, "fp_plain": 1}
    text = "\n".join(promise_lines({"met_on_val": True, "statement": "", "classes": {"3": entry}}))
    assert "1 at the unguarded point, the point that misses no more than the dense model on validation" in text, text
    assert "all 0" not in text


def test_many_protected_classes_wrap_the_panels_into_rows(figures, tmp_path):
    """Seven protected classes drew rounds.png 37 inches wide in one row (ten: 50), unreadable scaled into a page."""
    from toolchain.report.plots import MAX_COLUMNS, plot_report

    report = made_up_report()
    classes = [1, 2, 3, 4, 5, 6, 7]

    def widen(evaluation):
        one = evaluation["protected"][0]
        return {**evaluation, "protected": [{**one, "class": k} for k in classes]}

    report["protected"] = classes
    report["baseline"] = {**report["baseline"], "val": widen(report["baseline"]["val"]), "test": widen(report["baseline"]["test"])}
    report["stages"] = [{**s, **({"val": widen(s["val"])} if "val" in s else {}), **({"test": widen(s["test"])} if "test" in s else {})}
                        for s in report["stages"]]
    report["artifacts"] = [{**a, "evaluation": widen(a["evaluation"])} for a in report["artifacts"]]
    plot_report(report, tmp_path)
    rounds, ledger = figures["rounds.png"], figures["ledger.png"]
    assert len(rounds.axes) == len(classes) + 1 and len(ledger.axes) == len(classes)
    assert rounds.get_size_inches()[0] <= MAX_COLUMNS * 4.6 + 1e-6 and rounds.get_size_inches()[1] > 3 * 5  # three rows
    assert ledger.get_size_inches()[0] <= MAX_COLUMNS * 6.6 + 1e-6


def test_the_gate_line_names_keep_sensitivity_where_the_run_used_it():
    """--keep-sensitivity was in report.json's config alone: a user who chose it read a report that never said so."""
    from toolchain.report.markdown import render_report

    report = made_up_report()
    assert "--keep-sensitivity" not in render_report(report, terms=False)
    report["config"] = {**report["config"], "keep_sensitivity": True}
    assert ("accuracy drop <= 0.02; `--keep-sensitivity`: no protected class's own offset below 0)"
            in render_report(report, terms=False))


def test_long_class_names_keep_the_plots_readable_and_the_page_prints(figures, tmp_path, monkeypatch):
    """A reviewer with 40-character class names: three rounds.png titles ran into each other, ledger.png's first title was
    cut at the figure's edge (2,178 px wide, three panels a row), confusion.png's legend covered its bars, a failed run's
    confusion legend called its model "compressed"; report.html printed its sha256 column off the page, read each plot's
    caption twice to a screen reader and named no verdict in its title."""
    from toolchain.report.markdown import render_report
    from toolchain.report.plots import NAME_CHARS, plot_report
    from toolchain.report.run_report import write_run_report

    report = made_up_report(fn_after=2, fp_after=1)
    long = "a melanoma subtype named at length, " * 2
    report["class_names"] = [f"{long}{i}" for i in range(10)]
    plot_report(report, tmp_path)
    renderer = figures["rounds.png"].canvas.get_renderer()
    for fig in figures.values():
        for ax in fig.axes:
            title = ax.title.get_text()
            assert long not in title and all(len(line) <= 9 * 6.6 for line in title.split("\n")), title
            extent = ax.title.get_window_extent(renderer)
            assert extent.x0 >= 0 and extent.x1 <= fig.bbox.width + 1, (title, extent)
    assert max(len(t.get_text()) for t in figures["confusion.png"].axes[0].get_xticklabels()) <= len("class 5 ()") + 14
    assert f"({long[:NAME_CHARS - 1].rstrip()}\u2026)" in figures["rounds.png"].axes[0].title.get_text()
    ax = figures["confusion.png"].axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert all(not legend.overlaps(bar.get_window_extent(renderer)) for bar in _bars(ax) if bar.get_height() > 0)
    failed = {**made_up_report(fn_after=2), "promise": {"met_on_val": False}}
    plot_report(failed, tmp_path)
    labels = [t.get_text() for t in figures["confusion.png"].axes[0].get_legend().get_texts()]
    assert "run's model (pruned.pt, not to ship)" in labels and "compressed (pruned.pt)" not in labels, labels
    monkeypatch.undo()  # the plots written this time: the page embeds them
    run = tmp_path / "run"
    run.mkdir()
    write_run_report({**made_up_report(), "run_id": "abc123"}, run)
    page = (run / "report.html").read_text()
    assert "<title>cwtool compress report: gate PASSED, run abc123</title>" in page
    assert "@media print" in page and "overflow-wrap: anywhere" in page
    alts = re.findall(r'<img alt="([^"]*)"', page)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert alts and not set(alts) & set(captions) and all(a.startswith("plot ") for a in alts), alts
    assert render_report(report).count(long) >= 1  # the reports give the name whole


def test_names_inside_a_reason_are_escaped_once_and_a_recheck_names_only_what_it_cannot_show():
    """A regression reviewer: names escaped one after another escaped a name's escape again where another name held its
    character ('**zero**' beside '*'); the re-check command replaced a plain --data path by DATA where a --class-names
    value held the '<', which stayed escaped, and named report.json for export.md's command."""
    from toolchain.report.markdown import names_as_text, recheck_lines

    for names in (["**zero**", "*"], ["a_b", "_"], ["R&D", "&"]):
        line = names_as_text(f"class 0 ({names[0]}) and class 1 ({names[1]})", names)
        assert html.unescape(re.sub(r"<[^>]+>", "", render_html(line, [], "t"))).count(f"({names[0]})") == 1, line
    report = made_up_report()
    report["data"] = {**report["data"], "verify_data": "held/test", "verify_options": ["--class-names", "<5mm,>=5mm"]}
    (line,) = [line for line in recheck_lines(report, "export.json") if line]
    assert "--data held/test" in line and "--class-names VALUE" in line and "DATA" not in line, line
    assert "(VALUE: the value of --class-names in this run's data.verify_options, quoted for the shell)" in line
    report["data"] = {**report["data"], "verify_data": "a<b/d.npz", "verify_options": []}
    (line,) = [line for line in recheck_lines(report, "export.json") if line]
    assert "--data DATA" in line and "(DATA: the --data path the run was given, quoted for the shell)" in line and "report.json" not in line


def test_the_device_re_check_of_saved_signal_rows_carries_their_input_shape():
    """(N, C, L) signals: the printed device command (--data eval.npz) failed, exit 2: its 3-D x read as (N, H, W) images."""
    from toolchain.report.markdown import recheck_lines

    report = made_up_report()
    report["data"] = {**report["data"], "verify_data": "sig.npz", "verify_options": ["--input-shape", "2,128"]}
    (line,) = [line for line in recheck_lines(report, "report.json") if line]
    assert "--data sig.npz --input-shape 2,128" in line and "--data eval.npz --input-shape 2,128 -p 3" in line, line
    report["data"]["verify_options"] = []
    (line,) = [line for line in recheck_lines(report, "report.json") if line]
    assert "--input-shape" not in line


def test_plots_drawn_where_home_cannot_be_written_say_nothing_and_leave_nothing(tmp_path):
    """HOME where matplotlib cannot write its config (a container's user, a read-only home): it printed two WARNING
    lines beside cwtool's own and left a /tmp/matplotlib-* folder, which its atexit cleanup never removed (cwtool
    ends with os._exit)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.write_text("a file where a home folder should be")
    scratch.mkdir()
    report = tmp_path / "report.json"
    report.write_text(json.dumps(made_up_report(fn_after=2, fp_after=0)))
    code = ("import json, os, sys\nfrom pathlib import Path\nfrom toolchain.report.plots import plot_report\n"
            f"names = [p.name for p in plot_report(json.loads(Path({str(report)!r}).read_text()), Path({str(tmp_path / 'plots')!r}))]\n"
            "print(' '.join(names), os.environ.get('MPLCONFIGDIR'))\nsys.stdout.flush()\nos._exit(0)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(home), "TMPDIR": str(scratch)},
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "ledger.png" in proc.stdout and proc.stdout.split()[-1] == "None", proc.stdout  # drawn; not handed on
    assert list(scratch.iterdir()) == []


def test_onnxruntime_keeps_no_device_id_in_the_users_home(tmp_path):
    """onnxruntime wrote a device ID and a telemetry database under ~/.cache/Microsoft on every session cwtool opened."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    home = tmp_path / "home"
    home.mkdir()
    code = (f"import toolchain, onnxruntime\nonnxruntime.InferenceSession({str(tmp_path / 'm.onnx')!r}, "
            "providers=['CPUExecutionProvider'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(home)}, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert [p.relative_to(home) for p in home.rglob("*")] == []
