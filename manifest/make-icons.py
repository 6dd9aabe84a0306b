#!/usr/bin/env python3
"""Draws chatwarden's Teams app icons: a shield with a crossed-out chat bubble.

    python3 -m pip install 'pillow>=10'
    python3 manifest/make-icons.py            # writes manifest/color.png and manifest/outline.png
    python3 manifest/make-icons.py --out DIR  # writes them into DIR instead

Teams rules (https://learn.microsoft.com/microsoftteams/platform/concepts/build-and-test/apps-package):
- color.png: 192x192, full colour. The glyph sits on a solid background of the manifest's
  accentColor, inside the central 120x120 safe area.
- outline.png: 32x32, only white (#FFFFFF) on a transparent background; every pixel's RGB is
  white and only its alpha varies (anti-aliasing).

Everything is drawn 8x larger and scaled down, so edges are smooth. The output is deterministic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

# Keep in step with "accentColor" in manifest.template.json.
ACCENT = (0x1F, 0x4E, 0x79)
WHITE = (255, 255, 255)
SUPERSAMPLE = 8


def shield_points(cx: float, top: float, width: float, height: float, steps: int = 48) -> list[tuple[float, float]]:
    """A heraldic shield: flat top with raised shoulders, straight sides, curved to a point."""
    half = width / 2
    shoulder = top + height * 0.10
    side_end = top + height * 0.48
    tip = (cx, top + height)
    right: list[tuple[float, float]] = [(cx, top), (cx + half, shoulder), (cx + half, side_end)]
    # Quadratic Bezier from the end of the right side to the tip.
    p0, p1, p2 = (cx + half, side_end), (cx + half, top + height * 0.80), tip
    for i in range(1, steps + 1):
        t = i / steps
        x = (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t**2 * p2[0]
        y = (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t**2 * p2[1]
        right.append((x, y))
    left = [(2 * cx - x, y) for (x, y) in reversed(right[1:-1])]
    return right + left


def draw_bubble(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], fill: int | tuple[int, ...]) -> None:
    """A rounded chat bubble with a tail at the lower left."""
    x0, y0, x1, y1 = box
    radius = (y1 - y0) * 0.30
    draw.rounded_rectangle(box, radius=radius, fill=fill)
    w = x1 - x0
    draw.polygon([(x0 + w * 0.18, y1 - 1), (x0 + w * 0.42, y1 - 1), (x0 + w * 0.12, y1 + (y1 - y0) * 0.38)], fill=fill)


def draw_cross(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, width: float, fill: int | tuple[int, ...]) -> None:
    h = size / 2
    draw.line([(cx - h, cy - h), (cx + h, cy + h)], fill=fill, width=round(width))
    draw.line([(cx - h, cy + h), (cx + h, cy - h)], fill=fill, width=round(width))


def color_icon() -> Image.Image:
    """192x192: white shield on the accent colour, with an accent chat bubble crossed out in white."""
    s = SUPERSAMPLE
    size = 192 * s
    img = Image.new("RGB", (size, size), ACCENT)
    draw = ImageDraw.Draw(img)
    cx = size / 2
    # The shield fills the 120x120 safe area (36 px margins at 192).
    draw.polygon(shield_points(cx, 36 * s, 104 * s, 120 * s), fill=WHITE)
    draw_bubble(draw, (cx - 30 * s, 64 * s, cx + 30 * s, 104 * s), fill=ACCENT)
    draw_cross(draw, cx, 84 * s, 20 * s, 6 * s, fill=WHITE)
    return img.resize((192, 192), Image.Resampling.LANCZOS)


def outline_icon() -> Image.Image:
    """32x32: shield outline with a crossed-out bubble, white on transparent."""
    s = SUPERSAMPLE
    size = 32 * s
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx = size / 2
    outer = shield_points(cx, 2 * s, 24 * s, 28 * s)
    inner = shield_points(cx, 4.5 * s, 19 * s, 23.2 * s)
    draw.polygon(outer, fill=255)
    draw.polygon(inner, fill=0)
    draw_bubble(draw, (cx - 6.5 * s, 9 * s, cx + 6.5 * s, 18 * s), fill=255)
    draw_cross(draw, cx, 13.5 * s, 4.5 * s, 1.6 * s, fill=0)
    mask = mask.resize((32, 32), Image.Resampling.LANCZOS)
    img = Image.new("RGBA", (32, 32), WHITE + (0,))
    img.putalpha(mask)
    # Fully transparent pixels stay white too, so the RGB of every pixel is #FFFFFF.
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    color_icon().save(args.out / "color.png", optimize=True)
    outline_icon().save(args.out / "outline.png", optimize=True)
    print(f"wrote {args.out / 'color.png'} and {args.out / 'outline.png'}")


if __name__ == "__main__":
    main()
