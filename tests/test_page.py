"""The one results-page renderer: Markdown and HTML from the same blocks; Markdown rendered, HTML escaped."""

from __future__ import annotations

import pytest

from advguard.experiments.page import Page, pct


def _page() -> Page:
    return (
        Page("Title <b>")
        .h2("Table 1 & more")
        .text("- a `x` and **b**\n- [link](other.md)")
        .table(["h <1>", "h2"], [["`y`", 0.5], ["<script>", "**z**"]], caption="caption `c`")
        .figure("fig-1.png", b"\x89PNG\r\n", "Figure `w` <i>")
        .code("x < y & z")
    )


def test_html_renders_markdown_and_escapes_everything_else():
    h = _page().html()
    assert "<title>Title &lt;b&gt;</title>" in h and "<h2>Table 1 &amp; more</h2>" in h
    assert "<li>a <code>x</code> and <strong>b</strong></li>" in h and '<a href="other.md">link</a>' in h
    assert "<th>h &lt;1&gt;</th>" in h and "<td><code>y</code></td>" in h and "<td>0.5</td>" in h
    assert "<td>&lt;script&gt;</td>" in h and "<script>" not in h and "<td><strong>z</strong></td>" in h
    assert "<caption>caption <code>c</code></caption>" in h
    assert 'alt="Figure w &lt;i&gt;"' in h and "<figcaption>Figure <code>w</code> &lt;i&gt;</figcaption>" in h
    assert "data:image/png;base64,iVBORw0K" in h and "<pre>x &lt; y &amp; z</pre>" in h
    assert "`" not in h.split("<pre>")[0]  # no literal backticks left outside code blocks


def test_markdown_and_files(tmp_path):
    paths = _page().write(tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.startswith("# Title <b>\n") and "![Figure `w` <i>](fig-1.png)" in md and "*caption `c`*" in md
    assert "| h <1> | h2 |" in md and "```\nx < y & z\n```" in md
    assert (tmp_path / "out" / "fig-1.png").read_bytes() == b"\x89PNG\r\n"
    assert set(paths) == {"fig-1.png", "md", "html"}


@pytest.mark.parametrize("name", ["../x.png", "a/b.png", "x.svg", "x y.png", ""])
def test_figure_names_are_plain_png_file_names(name):
    with pytest.raises(ValueError, match="plain"):
        Page("t").figure(name, b"", "c")


def test_pct_handles_missing_values():
    assert pct(0.1234) == "12.3" and pct(None) == "-" and pct(float("nan")) == "-" and pct(1, 0) == "100"
