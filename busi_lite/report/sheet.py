"""Contact sheet of duplicate groups (``busi-lite data check --sheet``): Pillow only."""

from __future__ import annotations

from pathlib import Path

from busi_lite.common.atomic import atomic_path


def duplicate_sheet(root, groups: list[list[str]], path, max_groups: int = 30, thumb: int = 128) -> Path:
    """Contact sheet PNG: one row per duplicate group (thumbnails captioned with their paths),
    so a person can check that the groups `data check` finds are real. Pillow only."""
    from PIL import Image, ImageDraw

    from busi_lite.io.imread import read_rgb

    groups = groups[:max_groups]
    cols = max((len(g) for g in groups), default=1)
    cap = 14
    sheet = Image.new("RGB", (cols * (thumb + 6) + 6, len(groups) * (thumb + cap + 8) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for r, g in enumerate(groups):
        labels = {p.split("/")[0] for p in g}
        y = 6 + r * (thumb + cap + 8)
        for c, rel in enumerate(g):
            im = Image.fromarray(read_rgb(Path(root) / rel))
            im.thumbnail((thumb, thumb))
            x = 6 + c * (thumb + 6)
            sheet.paste(im, (x, y))
            colour = "red" if len(labels) > 1 else "black"
            draw.text((x, y + thumb + 1), rel.split("/")[-1][:22], fill=colour)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
