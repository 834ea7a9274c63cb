"""safe_text: JSON inside <script>, Evidently pages, markdown artifacts, all with hostile text."""

from __future__ import annotations

import html
import json
import re

import mistune
import pytest
from markdown_it import MarkdownIt

from tailguard import summary
from tailguard.safe_text import (
    ScriptBlockNotFound,
    escape_script_json,
    html_text,
    markdown_code,
    markdown_text,
    neutralise_evidently_html,
    terminal_text,
)

HOSTILE = [
    "</script><svg/onload=alert(1)>",  # issue 13: closes Evidently's data <script>
    "<img src=x onerror=alert(1)>",  # issue 13: GX data docs title
    "<!--<script>",  # escaped-script state
    "a\u2028b\u2029c",  # JS line terminators
    "&lt;b&gt; & \"quoted\" 'single' \\ backslash",
    "tab\tnul\x00esc\x1b",
    "日本語 ✓ emoji 🎉",
]
# Two renderers: markdown-it (CommonMark reference port, + GFM tables) and mistune with GFM autolinks.
RENDERERS = {
    "markdown-it": MarkdownIt("commonmark").enable(["table", "strikethrough"]).render,
    "mistune": mistune.create_markdown(escape=False, plugins=["table", "url", "strikethrough"]),
}
# Markdown injection, issue 13 (links, images, headings through a newline in a file name) and our own.
MD_HOSTILE = [
    "[Approve here](http://evil.example/resume)",
    "![pixel](http://evil.example/p.png)",
    "batch.csv\n# Approved by admin",
    "b.csv\r\n\r\n[x]: http://evil.example\n\n[Click][x]",
    "title\u2028## heading via U+2028",
    "<a href='http://evil.example'>html link</a> <img src=x onerror=alert(1)>",
    "<http://evil.example> http://evil.example www.evil.example mail@evil.example",
    "cell | breaks | row",
    "- list\n1. ordered\n> quote",
    "=== setext\n--- rule",
    "**bold** _em_ ~~strike~~ `code` \\",
    "&amp; entity &#60;script&#62;",
]


def _visible(rendered: str) -> str:
    """What a reader sees: tags removed, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", rendered)).split())


@pytest.mark.parametrize("value", HOSTILE)
def test_script_json_round_trips_and_cannot_close_the_element(value: str) -> None:
    for dumped in (json.dumps({"v": value, "k": [value]}), json.dumps({"v": value}, ensure_ascii=False)):
        escaped = escape_script_json(dumped)
        assert json.loads(escaped) == json.loads(dumped)
        assert not re.search("[<>&\u2028\u2029]", escaped)


def _evidently_like(data: dict) -> str:
    # The layout of evidently/legacy/utils/dashboard.py file_html_template (0.7.23), json.dumps as there.
    return (
        "<html><head><script>\n    var metric_ab12 = " + json.dumps(data) + ";\n"
        "    var additional_graphs_metric_ab12 = " + json.dumps({"g": data}) + ";\n</script></head>"
        "<body><script>var x = 1 < 2 && 3 > 2;</script></body></html>"
    )


def test_evidently_page_data_is_escaped_and_decodes_to_the_same_values() -> None:
    data = {"category": HOSTILE, "title": "</SCRIPT ><b>"}
    page = neutralise_evidently_html(_evidently_like(data))
    block = page[page.index("<script>") : page.index("</script>")]
    first = re.search(r"var metric_ab12 = (.*);\n", block).group(1)
    second = re.search(r"var additional_graphs_metric_ab12 = (.*);\n?$", block + "\n").group(1)
    assert json.loads(first) == data and json.loads(second) == {"g": data}
    assert page.lower().count("</script") == 2  # only the two the template wrote
    assert "var x = 1 < 2 && 3 > 2;" in page  # Evidently's own code is left alone


def test_page_without_the_data_block_is_refused() -> None:
    with pytest.raises(ScriptBlockNotFound, match="no '<script> var metric_"):
        neutralise_evidently_html("<html><script>var other = 1;</script></html>")
    with pytest.raises(ScriptBlockNotFound, match="has no end"):
        neutralise_evidently_html("<script>\n    var metric_ab = {};")


def test_drift_page_from_real_evidently_keeps_every_script_closed(tmp_path) -> None:
    import pandas as pd

    from tailguard.reports import drift_report

    pages = {}
    for name, values in (("plain", ["garden", "tools", "lamps", "paint"]), ("hostile", HOSTILE[:4])):
        frame = pd.DataFrame({"category": [*values, "garden"] * 12, "label": [0, 1] * 30})
        drift_report(frame, frame.iloc[::-1].reset_index(drop=True), tmp_path / f"{name}.html")
        pages[name] = (tmp_path / f"{name}.html").read_text()
    page = pages["hostile"]
    # Evidently's own bundle holds '<script' in string literals: compare with a page of plain values.
    assert page.lower().count("</script") == pages["plain"].lower().count("</script")
    assert "</script><svg" not in page and "\\u003c/script\\u003e\\u003csvg/onload=alert(1)\\u003e" in page


@pytest.mark.parametrize("value", MD_HOSTILE + HOSTILE)
@pytest.mark.parametrize("renderer", RENDERERS)
def test_markdown_text_renders_as_plain_text(value: str, renderer: str) -> None:
    rendered = RENDERERS[renderer](f"Batch {markdown_text(value)} refused\n")
    assert re.fullmatch(r"<p>.*</p>\s*", rendered, re.S), rendered  # one paragraph: no block escaped
    assert not re.search(r"<(a|img|h\d|li|ol|ul|blockquote|hr|table|script|em|strong|del|code)\b", rendered)
    expected = re.sub(r"\r\n|[\n\r\u2028\u2029]", " ", value)
    expected = re.sub(r"[\x00-\x08\x0e-\x1f]", "\ufffd", expected)
    assert _visible(rendered) == " ".join(f"Batch {expected} refused".split())


@pytest.mark.parametrize("renderer", RENDERERS)
def test_markdown_code_shows_backticks_literally(renderer: str) -> None:
    for value in ("s3://b/x`y``z", "`edge`", "a\n# b"):
        rendered = RENDERERS[renderer](f"at {markdown_code(value)}\n")
        assert rendered.count("<code>") == 1 and "<h1" not in rendered
        code = html.unescape(re.search(r"<code>(.*)</code>", rendered, re.S).group(1))
        assert code.strip() == value.replace("\n", " ").strip()


def test_markdown_text_keeps_plain_names_readable() -> None:
    assert markdown_text("label_binary") == "label_binary"
    assert markdown_text("popularity:tail") == "popularity:tail"
    assert markdown_text(None) == "" and html_text(None) == ""


def test_refused_batch_artifact_keeps_one_row_per_failure_and_no_links() -> None:
    result = {
        "batch_id": "b\n# Approved",
        "failures": [
            {
                "file": name,
                "column": "item_title",
                "rule": "no_markup",
                "observed": "1 row",
                "severity": "warning",
                "examples": [value],
            }
            for name, value in zip(MD_HOSTILE, reversed(MD_HOSTILE), strict=True)
        ],  # fmt: skip
        "could_not_run": ["[x](http://evil.example)"],
    }
    text = summary.validation_markdown(result, "s3://bucket/quarantine/b`\n## x")
    for render in RENDERERS.values():
        rendered = render(text)
        assert rendered.count("<h1>") == 1 and not re.search(r"<(a|img|h[2-6])\b", rendered)
        assert rendered.count("<tr>") == 1 + len(MD_HOSTILE)  # header + one row each
        assert all(r.count("<td>") == 6 for r in re.findall(r"<tr>.*?</tr>", rendered, re.S)[1:])


def test_outcome_and_review_artifacts_escape_data_driven_text() -> None:
    outcome = {"version": "v1`](http://x)", "why": "[go](http://evil.example)\n# PROMOTED",
               "paths": {"reports": ["/tmp/r\n![p](http://evil.example/p.png)"]}}  # fmt: skip
    evaluation = {"slices": {"category:[x](http://e)\n# H": {"dimension": "category", "rows": 5}}}
    decision = {"reasons": ["<img src=x onerror=alert(1)>", "- [ ] task"], "checks": []}
    for text in (
        summary.outcome_markdown(outcome),
        summary.review_markdown(evaluation, decision, "v1", "s3://b"),
    ):
        for render in RENDERERS.values():
            rendered = render(text)
            assert not re.search(r"<(a|img)\b", rendered) and rendered.count("<h1>") == 1, rendered


@pytest.mark.parametrize("fn", [html_text, markdown_text, markdown_code])
@pytest.mark.parametrize(
    "control", ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u061c"]
)
def test_bidi_controls_cannot_reorder_what_a_reviewer_reads(fn, control):
    """Trojan Source (CVE-2021-42574): `category:<RLO>gnp.exe` reads as `exe.png`; shown as its code point."""
    out = fn(f"category:{control}gnp.exe")
    assert control not in out
    assert f"U+{ord(control):04X}" in out and "gnp.exe" in out


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("tools\u200b", "tools[U+200B]"),  # two category slices that printed alike
        ("a\u202eevil", "a[U+202E]evil"),  # a right-to-left override reversed the rest of the line
        ("x\x1b[31mred", "x\\x1b[31mred"),  # an ANSI colour sequence
        ("l1\nl2\r", "l1\\nl2\\r"),
        ("soft\u00adhyphen\ufeff", "soft[U+00AD]hyphen[U+FEFF]"),
        ("红色 沙发 <b>", "红色 沙发 <b>"),
    ],
)
def test_terminal_text_prints_what_the_value_holds(value, shown):
    assert terminal_text(value) == shown


def test_metrics_summary_prints_slice_names_safely(tmp_path):
    """`tailguard metrics` printed category values raw: zero-width twins looked like one slice, U+202E
    reversed the line (a breaker found it)."""
    import numpy as np
    import pandas as pd

    from tailguard.commands import metrics_text
    from tailguard.metrics import EvalConfig, evaluate

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "query": [f"q{i % 40}" for i in range(n)], "item_id": [f"i{i % 90}" for i in range(n)],
        "label": rng.integers(0, 2, n), "category": ["tools", "tools\u200b", "a\u202eevil", "x\x1b[2J"] * 100,
    })  # fmt: skip
    ev = evaluate(frame, frame, {"candidate": rng.random(n)}, EvalConfig(n_bootstrap=0, min_positives=1))
    text = metrics_text(ev, tmp_path / "m.json")
    assert "category:tools[U+200B]" in text and "category:a[U+202E]evil" in text and "\\x1b[2J" in text
    assert not any(c in text for c in "\u200b\u202e\x1b")
