"""Checks a screenshot (PNG) for colours, with Pillow: each must cover at least 10 pixels.

    python3 screenshot_colors.py IMAGE RRGGBB [RRGGBB ...]

Prints how many pixels each colour covers; exits 1 if one is missing (the page did not render
what the colour stands for).
"""
import sys

from PIL import Image

image = Image.open(sys.argv[1]).convert("RGB")
counts = {}
for count, color in image.getcolors(maxcolors=image.width * image.height):
    counts[color] = count
missing = []
for wanted in sys.argv[2:]:
    rgb = tuple(int(wanted[i:i + 2], 16) for i in (0, 2, 4))
    seen = counts.get(rgb, 0)
    print(f"{wanted}: {seen} pixels")
    if seen < 10:
        missing.append(wanted)
print(f"{image.width}x{image.height}, {len(counts)} colours")
sys.exit(1 if missing else 0)
