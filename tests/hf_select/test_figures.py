import base64

import numpy as np
import pytest
from figure_checks import embedded_pngs, is_drawn

from hf_select.figures import (
    DATA_URI_PREFIX,
    figure_png,
    img_html,
    new_figure,
    png_data_uri,
    read_png,
)


def _plot():
    fig, ax = new_figure(figsize=(4, 2))
    ax.plot([0, 1, 2], [2, 0, 1], color="red")
    return fig


def test_figure_round_trips_through_a_data_uri_at_its_size():
    uri = png_data_uri(_plot())
    assert uri.startswith(DATA_URI_PREFIX)
    pixels = read_png(uri)
    assert pixels.shape[:2] == (2 * 90, 4 * 90)  # figsize x dpi
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    assert red.sum() > 50  # the line is in the picture
    assert is_drawn(uri)


def test_bytes_files_and_html_give_the_same_image(tmp_path):
    data = figure_png(_plot())
    path = tmp_path / "f.png"
    path.write_bytes(data)
    assert png_data_uri(path) == png_data_uri(data) == DATA_URI_PREFIX + base64.b64encode(data).decode()
    page = "<p>x</p>" + img_html(data, alt="a 'quoted' <alt>") + img_html(path)
    assert embedded_pngs(page) == [png_data_uri(data)] * 2
    assert "alt='a &#x27;quoted&#x27; &lt;alt&gt;'" in page
    assert np.array_equal(read_png(path), read_png(data))


def test_blank_figures_are_not_drawn_and_non_png_is_refused():
    fig, ax = new_figure()
    ax.axis("off")
    assert not is_drawn(figure_png(fig))
    with pytest.raises(ValueError, match="not a PNG"):
        png_data_uri(b"GIF89a....")
    with pytest.raises(ValueError, match="not a PNG"):
        read_png(b"\x00\x01")
