"""The Pillow side of gengate-bench's image scenario, and its test images.

    pillow_bench.py make DIR COUNT MEGAPIXELS   writes COUNT photo-like JPEGs (quality 90)
    pillow_bench.py run DIR MODE                the `standard` preset on every JPEG in DIR, with Pillow

`standard` is: EXIF orientation applied, fit within 1024 x 1024 (never enlarged), JPEG quality 85,
metadata dropped. MODE `plain` decodes every pixel, as a program that calls `Image.open` and
`thumbnail` does; `draft` first asks libjpeg to decode at 1/2, 1/4 or 1/8 scale (`Image.draft`),
Pillow's counterpart of libvips' shrink-on-load. Prints one JSON object: images, seconds,
images_per_second, peak_rss_mib (the process's peak) and baseline_rss_mib (after imports).
"""

import io
import json
import os
import sys
import time

from PIL import Image, ImageFilter, ImageOps


def make(directory, count, megapixels):
    os.makedirs(directory, exist_ok=True)
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    for index in range(count):
        # A smooth scene with grain: gradients, blurred shapes and mild noise, roughly what a
        # camera makes (about 4 MB at 12 MP), not pure noise.
        base = Image.linear_gradient("L").resize((width, height))
        red = base.rotate(index * 40 % 360, expand=False).resize((width, height))
        green = Image.radial_gradient("L").resize((width, height))
        blue = base.transpose(Image.FLIP_LEFT_RIGHT)
        scene = Image.merge("RGB", (red, green, blue)).filter(ImageFilter.GaussianBlur(3))
        grain = Image.merge("RGB", [Image.effect_noise((width, height), 40) for _ in range(3)])
        photo = Image.blend(scene, grain, 0.3)
        photo.save(os.path.join(directory, "photo-%02d.jpg" % index), quality=90)


def status_mib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(directory, mode):
    files = sorted(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".jpg"))
    baseline = status_mib("VmRSS")
    started = time.perf_counter()
    total = 0
    for path in files:
        with Image.open(path) as image:
            if mode == "draft":
                image.draft("RGB", (1024, 1024))
            image = ImageOps.exif_transpose(image)
            image.thumbnail((1024, 1024), Image.LANCZOS)
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=85)
            total += out.tell()
    seconds = time.perf_counter() - started
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a process started
    # by a large parent would report the parent's size.
    peak = status_mib("VmHWM")
    print(json.dumps({
        "images": len(files), "seconds": seconds, "images_per_second": len(files) / seconds,
        "peak_rss_mib": peak, "baseline_rss_mib": baseline, "output_bytes": total,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        run(sys.argv[2], sys.argv[3])
