"""Regenerates the bundled sample images in samples/ (run once by a developer; the PNGs are committed).

person.png: skimage.data.astronaut() (NASA photo of Eileen Collins, public domain), centre 3:4 crop, 384x512.
garment.png: a flat-lay T-shirt drawn here (polygons), 384x512.
mask.png / densepose.png: hand-placed stand-ins for the mask and DensePose nodes' outputs.
"""

import pathlib

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

OUT = pathlib.Path(__file__).resolve().parents[1] / "samples"
W, H = 384, 512


def person() -> Image.Image:
    image = Image.fromarray(data.astronaut())  # 512x512
    crop_w = 512 * 3 // 4
    left = (512 - crop_w) // 2
    return image.crop((left, 0, left + crop_w, 512)).resize((W, H), Image.BICUBIC)


def garment() -> Image.Image:
    image = Image.new("RGB", (W, H), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    body = [(110, 110), (150, 85), (234, 85), (274, 110), (340, 170), (300, 215), (270, 190), (270, 440), (114, 440),
            (114, 190), (84, 215), (44, 170)]
    draw.polygon(body, fill=(38, 92, 170), outline=(20, 50, 100))
    draw.ellipse((160, 70, 224, 120), fill=(250, 250, 250))
    draw.line([(114, 300), (270, 300)], fill=(240, 200, 40), width=10)
    return image


def mask() -> Image.Image:
    array = np.zeros((H, W), np.uint8)
    array[250:512, 40:350] = 255
    return Image.fromarray(array).convert("RGB")


def densepose() -> Image.Image:
    array = np.zeros((H, W, 3), np.uint8)
    array[240:512, 80:310] = (53, 42, 135)    # torso-ish part, a Parula colour
    array[260:512, 30:80] = (15, 174, 185)    # right arm
    array[260:512, 310:360] = (199, 188, 56)  # left arm
    array[120:240, 140:250] = (248, 250, 13)  # head
    return Image.fromarray(array)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, make in {"person": person, "garment": garment, "mask": mask, "densepose": densepose}.items():
        make().save(OUT / f"{name}.png")
        print(OUT / f"{name}.png")
