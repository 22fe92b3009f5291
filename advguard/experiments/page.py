"""The one results-page renderer: a page built once and written twice, as Markdown (``results.md``) and as a
self-contained HTML report (``report.html``, a Jinja2 template; Markdown rendered by markdown-it-py).

Experiments add blocks in order (headings, paragraphs, tables, figures, code); figures are PNG bytes, written
beside the Markdown and embedded (base64) in the HTML. Everything is written atomically.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path, atomic_write_text
from ..report import markdown_table

if TYPE_CHECKING:  # pragma: no cover
    import jinja2
    from markdown_it import MarkdownIt
    from matplotlib.figure import Figure


@functools.lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("advguard.experiments", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("page.html")


def fig_png(fig: Figure) -> bytes:
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


def pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Page:
    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h2(self, text: str) -> Page:
        self.blocks.append(("h2", text))
        return self

    def text(self, markdown: str) -> Page:
        """A paragraph or bullet list (Markdown; in the HTML, `code` and **bold** are rendered)."""
        self.blocks.append(("text", markdown))
        return self

    def table(self, header: list[str], rows: list[list[Any]], caption: str | None = None) -> Page:
        self.blocks.append(("table", header, rows, caption))
        return self

    def figure(self, name: str, png: bytes, caption: str) -> Page:
        if not re.fullmatch(r"[A-Za-z0-9._-]+\.png", name):
            raise ValueError(f"figure file name {name!r} must be a plain *.png name")
        self.blocks.append(("figure", name, png, caption))
        return self

    def code(self, text: str) -> Page:
        self.blocks.append(("code", text))
        return self

    def configuration(self, doc: dict[str, Any]) -> Page:
        """The closing section of every results page: the configuration as run (its TOML, else the parsed
        configuration) and the software versions."""
        import json

        self.h2("Configuration")
        self.code(doc.get("config_toml") or json.dumps(doc["config"], indent=2, default=str))
        if doc.get("software"):
            self.text("Software: " + ", ".join(f"{k} {v}" for k, v in doc["software"].items()))
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
        """The self-contained HTML page (Jinja2 template ``templates/page.html``; Markdown by markdown-it-py,
        figures embedded as base64 PNG)."""
        md = _markdown()
        blocks = []
        for b in self.blocks:
            if b[0] == "h2":
                blocks.append({"kind": "h2", "text": b[1]})
            elif b[0] == "text":
                blocks.append({"kind": "text", "html": md.render(b[1])})
            elif b[0] == "table":
                blocks.append(
                    {
                        "kind": "table",
                        "caption": md.renderInline(b[3]) if b[3] else "",
                        "header": [str(x) for x in b[1]],
                        "rows": [[md.renderInline(str(x)) for x in r] for r in b[2]],
                    }
                )
            elif b[0] == "figure":
                blocks.append(
                    {
                        "kind": "figure",
                        "alt": b[3].replace("`", ""),
                        "caption": md.renderInline(b[3]),
                        "data": base64.b64encode(b[2]).decode(),
                    }
                )
            elif b[0] == "code":
                blocks.append({"kind": "code", "text": b[1]})
        return _template().render(title=self.title, blocks=blocks)

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
