"""Small helpers shared by the core, the sensors and the experiments."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import carla
import cv2
import numpy as np

from .errors import ConfigError

PIXEL_CENTRE = 128.0   # uint8 pixels are mapped to about [-1, 1) around this value
TRANSFORM_FORMAT = "x,y,z[,roll,pitch,yaw] (metres, degrees)"


def join_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` merged on top of `base`, nested dicts merged key by key; neither is modified.

    Why: configs are defaults plus what the user wrote, and a user who sets one nested key
    (e.g. hero.blueprint) must keep every other default of that section.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = join_dicts(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def post_process_image(image: np.ndarray, normalized: bool = True, grayscale: bool = True) -> np.ndarray:
    """An (H, W, 3) RGB uint8 image as a network input: optionally grayscale (H, W, 1), and
    optionally float32 in about [-1, 1) instead of uint8."""
    if grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, np.newaxis]
    if normalized:
        return (image.astype(np.float32) - PIXEL_CENTRE) / PIXEL_CENTRE
    return image.astype(np.uint8)


def parse_transform(text: str, setting: str) -> carla.Transform:
    """"x,y,z[,roll,pitch,yaw]" (the original project's spawn point format) as a carla.Transform."""
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (3, 6):
        raise ConfigError(f"{setting}: '{text}' is not a transform; write {TRANSFORM_FORMAT}, e.g. '10.5,-3,0.5,0,0,90'")
    x, y, z = values[:3]
    roll, pitch, yaw = values[3:] if len(values) == 6 else (0.0, 0.0, 0.0)
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
