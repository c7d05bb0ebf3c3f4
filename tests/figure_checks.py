"""Checks that a figure was drawn: the PNGs embedded in a page, and whether an image shows a plot."""

from __future__ import annotations

from hf_select.figures import read_png


def embedded_pngs(page: str) -> list[str]:
    """The PNG data URIs embedded in an HTML page, in order."""
    import re

    return re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)


def is_drawn(image, min_colors: int = 3) -> bool:
    """True when a PNG (bytes, file or data URI) decodes and shows at least ``min_colors`` distinct colours
    (a figure with axes and data; a blank or single-colour image is not drawn)."""
    import numpy as np

    pixels = read_png(image)
    flat = pixels.reshape(-1, pixels.shape[-1]) if pixels.ndim == 3 else pixels.reshape(-1, 1)
    return len(np.unique(flat, axis=0)) >= min_colors
