"""Makes the test images of GenGate's image tests with Pillow, an independent encoder, into the
directory given as the first argument, and checks images GenGate made (`check`).

    make_images.py make DIR           writes every test image into DIR
    make_images.py check FILE         prints FILE's format, size and EXIF orientation as JSON
    make_images.py big DIR MEGAPIXELS writes DIR/big.jpg, a noisy photo-like JPEG of that size
"""

import io
import json
import os
import struct
import sys
import zlib

from PIL import Image, ImageDraw


def gradient(size, mode="RGB"):
    width, height = size
    image = Image.new(mode, size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = int(40 + 150 * y / max(1, height - 1))
        colour = (shade, 255 - shade, 120) if mode != "RGBA" else (shade, 255 - shade, 120, 200)
        draw.line([(0, y), (width, y)], fill=colour)
    # A mark in the top-left corner, to tell orientation by.
    corner = (255, 0, 0) if mode != "RGBA" else (255, 0, 0, 255)
    draw.rectangle([0, 0, width // 4, height // 4], fill=corner)
    return image


def png_header_only(width, height):
    """A valid PNG signature and header claiming width x height, with one tiny data chunk."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def make(directory):
    os.makedirs(directory, exist_ok=True)
    gradient((640, 480)).save(os.path.join(directory, "photo.jpg"), quality=92)
    gradient((300, 200), "RGBA").save(os.path.join(directory, "alpha.png"))
    gradient((500, 500)).save(os.path.join(directory, "square.webp"), quality=90)
    frames = [gradient((100, 80)), gradient((100, 80)).rotate(180)]
    frames[0].save(os.path.join(directory, "anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    # Stored 400x200 with EXIF orientation 6 (rotate 90° clockwise to show): shown 200x400.
    exif = Image.Exif()
    exif[0x0112] = 6
    gradient((400, 200)).save(os.path.join(directory, "rotated.jpg"), quality=92, exif=exif.tobytes())
    # A big one: 4000x3000 (12 MP) of noise, so compression has work to do.
    noise = Image.effect_noise((4000, 3000), 60).convert("RGB")
    noise.save(os.path.join(directory, "large.jpg"), quality=95)
    # Truncated: the first half of a JPEG.
    buffer = io.BytesIO()
    gradient((800, 600)).save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()
    with open(os.path.join(directory, "truncated.jpg"), "wb") as out:
        out.write(data[: len(data) // 2])
    with open(os.path.join(directory, "not-an-image.jpg"), "wb") as out:
        out.write(b"hello, this is text pretending to be a JPEG\n" * 20)
    # A PNG whose name (and any declared type) says JPEG.
    gradient((120, 90)).save(os.path.join(directory, "png-named.jpg"), format="PNG")
    with open(os.path.join(directory, "bomb.png"), "wb") as out:
        out.write(png_header_only(50000, 50000))
    gradient((1000, 300)).save(os.path.join(directory, "wide.png"))
    gradient((200, 200)).save(os.path.join(directory, "small.png"))


def check(path):
    with Image.open(path) as image:
        exif = image.getexif()
        image.load()
        print(json.dumps({
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "bytes": os.path.getsize(path),
            "orientation": exif.get(0x0112),
            "exif": len(exif),
            "corner": list(image.convert("RGB").getpixel((2, 2))),
        }))


def big(directory, megapixels):
    width = int((float(megapixels) * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    # Noise in every band compresses badly: about 1.25 bytes a pixel at quality 95.
    image = Image.merge("RGB", [Image.effect_noise((width, height), 120) for _ in range(3)])
    image.save(os.path.join(directory, "big.jpg"), quality=95)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "make":
        make(sys.argv[2])
    elif command == "check":
        check(sys.argv[2])
    elif command == "big":
        big(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + command)
