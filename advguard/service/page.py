"""The web page at ``/``: a Jinja2 template (package data, ``templates/index.html``) with the model's facts filled
in; plain HTML, CSS and a little JavaScript, nothing fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2

from ..guard import Guard
from .settings import MEDIA_TYPES, ServiceSettings


def render_page(guard: Guard, settings: ServiceSettings, model: str, class_names: Sequence[str] | None) -> str:
    """The page's HTML for this guard and these settings."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("advguard.service", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    clf = guard.classifier
    h, w = clf.size or (32, 32)
    config = {
        "model": model,
        "size": [h, w],
        "resize": settings.resize,
        "classes": list(class_names) if class_names is not None else None,
        "tokenRequired": settings.token is not None,
        "accept": list(MEDIA_TYPES),
        "maxBytes": settings.max_body_bytes,
    }
    return env.get_template("index.html").render(
        model=model,
        detectors=guard.names,
        combine=guard.combine,
        fpr=guard.fpr,
        height=h,
        width=w,
        resize=settings.resize,
        token_required=settings.token is not None,
        accept=",".join(MEDIA_TYPES),
        config=config,
    )
