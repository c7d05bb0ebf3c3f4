"""Figures as embeddable images: one way to turn a matplotlib figure or a PNG file into a data URI or an
HTML ``<img>`` (reports, dataset cards), and back into pixels (tests).

Everything runs on the non-interactive Agg backend; figures are closed once rendered.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

DATA_URI_PREFIX = "data:image/png;base64,"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def new_figure(figsize: tuple[float, float] = (5, 3), ncols: int = 1):
    """A matplotlib ``(figure, axes)`` on the Agg backend (``ncols`` side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize)


def figure_png(fig, dpi: int = 90, close: bool = True) -> bytes:
    """The PNG bytes of a matplotlib figure (laid out tightly; closed unless ``close=False``)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buffer.getvalue()


def png_data_uri(image) -> str:
    """``data:image/png;base64,...`` of a figure, PNG bytes or a PNG file path."""
    if isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        data = figure_png(image)
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image (the PNG signature is missing)")
    return DATA_URI_PREFIX + base64.b64encode(data).decode()


def img_html(image, alt: str = "") -> str:
    """An ``<img>`` embedding a figure, PNG bytes or a PNG file (see :func:`png_data_uri`)."""
    return f"<img src='{png_data_uri(image)}' alt='{html.escape(alt, quote=True)}'>"


def read_png(image):
    """Pixels ``[height, width, channels]`` (float in [0, 1]) of PNG bytes, a PNG file or a PNG data URI."""
    import matplotlib.image as mpimg

    if isinstance(image, str) and image.startswith(DATA_URI_PREFIX):
        image = base64.b64decode(image[len(DATA_URI_PREFIX) :])
    if isinstance(image, (bytes, bytearray)):
        if not bytes(image).startswith(PNG_SIGNATURE):
            raise ValueError("not a PNG image (the PNG signature is missing)")
        image = io.BytesIO(bytes(image))
    return mpimg.imread(image, format="png")
