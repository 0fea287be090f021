"""One box parser: the web page's ``box`` field and the CLI's ``--box`` follow the same rule."""

from __future__ import annotations

import pytest

from busi_lite.serving.boxes import BoxError, box_in_image, make_box, parse_box
from busi_lite.web.uploads import UploadError
from busi_lite.web.uploads import parse_box as web_parse_box

W, H = 300, 200
CASES = [  # (text, the box clamped to a 300x200 image | None = refused)
    ("10,20,110,120", (10, 20, 110, 120)),
    ("10.4,20.6,110.2,120.7", (10, 20, 111, 121)),      # whole pixels: top-left down, bottom-right up
    ("-5,-5,50,60", (0, 0, 50, 60)),                   # clamped to the image
    ("250,150,400,300", (250, 150, 300, 200)),
    (" 1 , 2 , 30 , 40 ", (1, 2, 30, 40)),
    ("110,120,10,20", None),                           # corners swapped: refused, never sorted
    ("10,20,110,20", None),                            # empty
    ("120,80,60,50", None),                            # x,y,width,height is not a box
    ("1,2,3", None), ("1,2,three,4", None), ("1,2,nan,4", None), ("1,2,inf,4", None), ("", None),
    ("305,205,400,300", None),                         # outside the image
    ("299,10,330,40", None),                           # 1 pixel inside
]


@pytest.mark.parametrize("text, want", CASES)
def test_web_and_cli_parse_a_box_alike(text, want):
    if want is None:
        with pytest.raises(BoxError) as cli:
            box_in_image(make_box(text, "--box"), W, H)
        with pytest.raises(UploadError) as web:
            web_parse_box(text, (W, H))
        assert web.value.status == 400 and web.value.fix == cli.value.fix
        assert web.value.what.split(": ", 1)[1] == cli.value.what.split(": ", 1)[1]  # same words, other source
    else:
        assert parse_box(text, W, H) == web_parse_box(text, (W, H)) == want
        assert box_in_image(make_box(text, "--box"), W, H) == want


def test_errors_name_where_the_box_came_from():
    with pytest.raises(BoxError, match=r"^--box: .*top-left corner first"):
        parse_box("110,120,10,20", W, H, "--box")
    with pytest.raises(UploadError, match=r"^box: .*top-left corner first"):
        web_parse_box("110,120,10,20", (W, H))
    with pytest.raises(UploadError, match="characters long"):
        web_parse_box("1," * 200 + "1", (W, H))
