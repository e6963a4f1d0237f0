"""Regenerates the bundled sample images in samples/ (run once by a developer; the PNGs are committed).

person.png: skimage.data.astronaut() (NASA photo of Eileen Collins, public domain), 512x512 as shipped.
person_masked.png: the same photo with a hand-drawn mask over the upper body in its alpha channel, as ComfyUI's
    mask editor saves it (alpha 0 = masked; LoadImage's MASK output is 1 - alpha).
garment*.png: flat-lay garments drawn here (polygons), 384x512: a short-sleeve T-shirt, a long-sleeve top in
    another colour, a striped T-shirt, and a sleeveless dress.
"""

import pathlib

from PIL import Image, ImageDraw
from skimage import data

OUT = pathlib.Path(__file__).resolve().parents[1] / "samples"
W, H = 384, 512
BACKGROUND = (250, 250, 250)


def person() -> Image.Image:
    return Image.fromarray(data.astronaut())


def person_masked() -> Image.Image:
    image = person().convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    ImageDraw.Draw(alpha).polygon([(120, 300), (200, 250), (330, 250), (420, 300), (470, 512), (70, 512)], fill=0)
    image.putalpha(alpha)
    return image


def tshirt(colour: tuple[int, int, int], long_sleeves: bool = False, stripes: bool = False) -> Image.Image:
    image = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if long_sleeves:
        body = [(110, 110), (150, 85), (234, 85), (274, 110), (350, 400), (310, 415), (270, 220), (270, 440), (114, 440), (114, 220), (74, 415), (34, 400)]
    else:
        body = [(110, 110), (150, 85), (234, 85), (274, 110), (340, 170), (300, 215), (270, 190), (270, 440), (114, 440), (114, 190), (84, 215), (44, 170)]
    draw.polygon(body, fill=colour, outline=tuple(c // 2 for c in colour))
    if stripes:
        for y in range(150, 440, 40):
            draw.line([(114, y), (270, y)], fill=(245, 245, 245), width=12)
    else:
        draw.line([(114, 300), (270, 300)], fill=(240, 200, 40), width=10)
    draw.ellipse((160, 70, 224, 120), fill=BACKGROUND)
    return image


def dress() -> Image.Image:
    image = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.polygon(
        [(140, 40), (170, 40), (192, 80), (214, 40), (244, 40), (250, 190), (330, 490), (54, 490), (134, 190)], fill=(120, 60, 150), outline=(60, 30, 75)
    )
    draw.line([(134, 190), (250, 190)], fill=(230, 210, 240), width=8)
    return image


SAMPLES = {
    "person": person,
    "person_masked": person_masked,
    "garment": lambda: tshirt((38, 92, 170)),
    "garment_long_sleeve": lambda: tshirt((170, 40, 50), long_sleeves=True),
    "garment_striped": lambda: tshirt((30, 120, 70), stripes=True),
    "garment_dress": dress,
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, make in SAMPLES.items():
        make().save(OUT / f"{name}.png")
        print(OUT / f"{name}.png")
