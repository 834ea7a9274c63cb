"""Escaping for text that reaches a page: HTML text, JSON inside <script>, and markdown (pure functions).

Queries are typed by shoppers and titles by sellers, so every cell value, file name and batch id is hostile
input here. Each helper keeps the text readable (a reviewer sees `</script>` as those nine characters) and
makes it inert in the one context it is meant for; none of them is safe in another context.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

__all__ = [
    "ScriptBlockNotFound",
    "escape_script_json",
    "html_text",
    "markdown_code",
    "markdown_text",
    "neutralise_evidently_file",
    "neutralise_evidently_html",
    "terminal_text",
]

# Inside <script> the HTML parser ends the element at the first `</script` whatever the JS says, and `<!--`
# switches it into an escaped state; U+2028/2029 end a JS string literal in pre-2019 engines. JSON allows
# \uXXXX for any character in a string, so these escapes parse back to the identical value (RFC 8259 §7;
# the same set Django's json_script and Go's html/template escape).
_SCRIPT_JSON = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

# Every line terminator a markdown or HTML renderer may honour: \r\n, \n, \r, VT, FF, NEL, U+2028/2029.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# Bidirectional embeddings, overrides and isolates reorder what a reviewer sees ("Trojan Source",
# CVE-2021-42574): a category `\u202egnp.exe` reads as `exe.png`. Shown as their code point instead.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _bidi_visible(text: str) -> str:
    return _BIDI.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", text)


# Characters a terminal prints as nothing: "tools" and "tools\u200b" are two category slices that would
# print alike with different numbers.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff]")


def terminal_text(value: object) -> str:
    """One line of text for a terminal: controls and line breaks as their escapes (ANSI sequences start
    with ESC), bidirectional controls and invisible characters as [U+XXXX], so what is printed is what the
    value holds and a right-to-left override cannot reverse the rest of the line."""

    def escaped(m: re.Match[str]) -> str:
        return m.group(0).encode("unicode_escape").decode()

    text = _CONTROLS.sub(escaped, _LINE_BREAKS.sub(escaped, str(value)))
    return _INVISIBLE.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", _bidi_visible(text))


# What can start markup inside one line of CommonMark/GFM text: code spans, emphasis and strikethrough,
# link/image brackets, table pipes, raw HTML, entities, GFM autolinks (`scheme://`, `www.`, `user@host`).
# CommonMark lets a backslash escape any ASCII punctuation (spec 0.31 §2.4): `\<` shows `<` and `\&amp;`
# shows `&amp;`, with no entity decoding to rely on. Parentheses, dots and colons are left alone: without
# `]` or `://` they make nothing, and slice names such as `popularity:tail` stay greppable.
_MD_INLINE = re.compile(r"""[\\`*_~\[\]!|#<>&@]|(?<=:)//|(?<=www)\.""", re.IGNORECASE)
# Block markers only count at the start of a line, and a value never holds a line break once cleaned.
_MD_BULLET = re.compile(r"^(\s*)([-+=])")
_MD_ORDERED = re.compile(r"^(\s*\d{1,9})([.)])")


def _md_escape(match: re.Match[str]) -> str:
    char, text, i = match.group(0), match.string, match.start()
    if char == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
        return char  # intraword `_` never opens or closes emphasis (CommonMark §6.2): label_binary stays
    return "".join("\\" + c for c in char)


def html_text(value: object) -> str:
    """`str(value)` escaped for HTML text and quoted attribute values (`<>&"'` become entities); bidi
    controls (U+202A-202E, U+2066-2069, LRM/RLM/ALM) are shown as `[U+202E]` so they cannot reorder it."""
    return html.escape(_bidi_visible("" if value is None else str(value)), quote=True)


def escape_script_json(text: str) -> str:
    """JSON (or JS object literals) made safe to sit inside an HTML <script> element.

    Replaces `<`, `>`, `&`, U+2028 and U+2029 with `\\u003c`-style escapes. Outside string literals JSON
    has none of these characters, so `json.loads(escape_script_json(s)) == json.loads(s)` for any JSON
    text `s`. Do not apply it to arbitrary JavaScript code (`a<b` would become invalid).
    """
    return text.translate(_SCRIPT_JSON)


class ScriptBlockNotFound(ValueError):
    """The page does not have the layout the escaper knows: refuse rather than store an unchecked page."""


# Evidently 0.7.23 (evidently/legacy/utils/dashboard.py, file_html_template) writes the report data as
#   <script>\n    var metric_<hex> = <json>;\n    var additional_graphs_metric_<hex> = <json>;\n</script>
# with json.dumps (no indent): a literal newline cannot occur inside the JSON, so the block ends at the
# first "\n</script>" after its start.
_EVIDENTLY_DATA = re.compile(r"<script>\n\s*var (metric_[0-9a-f]+) = ")


def neutralise_evidently_html(page: str) -> str:
    """An Evidently report page with its embedded report data escaped by `escape_script_json`.

    The data block holds only `var name = JSON;` statements, so escaping the whole block keeps the
    JavaScript and the decoded values identical while no cell text can close the <script> element.
    Raises ScriptBlockNotFound when no data block (or no end of it) is found, e.g. after an Evidently
    upgrade changed the template.
    """
    starts = list(_EVIDENTLY_DATA.finditer(page))
    if not starts:
        raise ScriptBlockNotFound("Evidently page: no '<script> var metric_… =' data block found")
    parts, pos = [], 0
    for match in starts:
        end = page.find("\n</script>", match.end())
        if end < 0:
            raise ScriptBlockNotFound(f"Evidently page: data block {match.group(1)} has no end")
        parts += [page[pos : match.end()], escape_script_json(page[match.end() : end])]
        pos = end
    parts.append(page[pos:])
    return "".join(parts)


def neutralise_evidently_file(path: str | Path) -> Path:
    """Rewrite a saved Evidently HTML file in place with `neutralise_evidently_html`; returns the path."""
    path = Path(path)
    path.write_text(neutralise_evidently_html(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def markdown_text(value: object) -> str:
    """`str(value)` as inert inline markdown: shows the same characters, makes no link, image or heading.

    Line breaks (including U+2028/2029, NEL) become one space each, so a value cannot start a new block
    (heading, list, table row, link definition); other control characters become U+FFFD. A leading list,
    quote or setext marker is escaped, and so is everything that starts inline markup or raw HTML, with
    backslashes only (see _MD_INLINE). Safe inside a GFM table cell (`|` is escaped).
    """
    text = _CONTROLS.sub("\ufffd", _LINE_BREAKS.sub(" ", "" if value is None else str(value)))
    text = _MD_INLINE.sub(_md_escape, _bidi_visible(text))
    return _MD_ORDERED.sub(r"\1\\\2", _MD_BULLET.sub(r"\1\\\2", text))


def markdown_code(value: object) -> str:
    """`str(value)` as an inline code span, fenced by more backticks than any run inside it.

    Line breaks become spaces and control characters U+FFFD (as in `markdown_text`); CommonMark shows
    code span content literally (no links, emphasis or HTML). A `|` would still split a GFM table cell,
    so use `markdown_text` inside tables.
    """
    text = _bidi_visible(_CONTROLS.sub("\ufffd", _LINE_BREAKS.sub(" ", "" if value is None else str(value))))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # A space on each side when the content touches a backtick (CommonMark strips one space each side).
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"
