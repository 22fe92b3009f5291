"""A results page built once and written twice: Markdown (``results.md``) and self-contained HTML (``report.html``).

Experiments add blocks in order (headings, paragraphs, tables, figures); figures are PNG
bytes, written beside the Markdown and embedded (base64) in the HTML. Everything is
written atomically.
"""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_path, atomic_write_text
from ..report import markdown_table


def fig_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pct(v: float | None, digits: int = 1) -> str:
    """A share as a percentage with ``digits`` decimals; "-" for a missing (None or NaN) value."""
    return "-" if v is None or v != v else f"{100 * v:.{digits}f}"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Page:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h2(self, text: str) -> "Page":
        self.blocks.append(("h2", text))
        return self

    def text(self, markdown: str) -> "Page":
        """A paragraph or bullet list (Markdown; in the HTML, `code` and **bold** are rendered)."""
        self.blocks.append(("text", markdown))
        return self

    def table(self, header: list[str], rows: list[list], caption: str | None = None) -> "Page":
        self.blocks.append(("table", header, rows, caption))
        return self

    def figure(self, name: str, png: bytes, caption: str) -> "Page":
        if not re.fullmatch(r"[A-Za-z0-9._-]+\.png", name):
            raise ValueError(f"figure file name {name!r} must be a plain *.png name")
        self.blocks.append(("figure", name, png, caption))
        return self

    def code(self, text: str) -> "Page":
        self.blocks.append(("code", text))
        return self

    # ------------------------------------------------------------------ rendering
    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for b in self.blocks:
            if b[0] == "h2":
                out.append(f"\n## {b[1]}\n")
            elif b[0] == "text":
                out.append(b[1].rstrip() + "\n")
            elif b[0] == "table":
                if b[3]:
                    out.append(f"*{b[3]}*\n")
                out.append(markdown_table(b[1], b[2]) + "\n")
            elif b[0] == "figure":
                out.append(f"![{b[3]}]({b[1]})\n\n*{b[3]}*\n")
            elif b[0] == "code":
                out.append("```\n" + b[1].rstrip() + "\n```\n")
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape

        def inline(s: str) -> str:
            s = esc(s)
            s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
            s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
            return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', s)

        parts = []
        for b in self.blocks:
            if b[0] == "h2":
                parts.append(f"<h2>{esc(b[1])}</h2>")
            elif b[0] == "text":
                lines = b[1].strip().splitlines()
                if all(ln.lstrip().startswith("- ") for ln in lines if ln.strip()):
                    parts.append("<ul>" + "".join(f"<li>{inline(ln.lstrip()[2:])}</li>" for ln in lines
                                                  if ln.strip()) + "</ul>")
                else:
                    parts.append(f"<p>{inline(' '.join(lines))}</p>")
            elif b[0] == "table":
                cap = f"<caption>{inline(b[3])}</caption>" if b[3] else ""
                h = "".join(f"<th>{esc(str(x))}</th>" for x in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{inline(str(x))}</td>" for x in r) + "</tr>" for r in b[2])
                parts.append(f"<table>{cap}<thead><tr>{h}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "figure":
                data = base64.b64encode(b[2]).decode()
                parts.append(f'<figure><img alt="{esc(b[3])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{esc(b[3])}</figcaption></figure>")
            elif b[0] == "code":
                parts.append(f"<pre>{esc(b[1])}</pre>")
        body = "\n".join(parts)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(self.title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1250px}}table{{border-collapse:collapse;font-size:13px;
margin:0.5em 0 1em}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}caption{{caption-side:top;text-align:left;font-style:italic;padding:4px 0}}
figure{{display:inline-block;margin:0.5em;vertical-align:top}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body><h1>{esc(self.title)}</h1>
{body}
</body></html>
"""

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``results.md``, ``report.html`` and the figures into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for b in self.blocks:
            if b[0] == "figure":
                with atomic_path(out / b[1]) as tmp:
                    tmp.write_bytes(b[2])
                paths[b[1]] = out / b[1]
        paths["md"] = atomic_write_text(out / "results.md", self.markdown())
        paths["html"] = atomic_write_text(out / "report.html", self.html())
        return paths
