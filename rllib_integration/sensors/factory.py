"""Sensors by CARLA blueprint name, spawned from the hero config's `sensors` section.

A sensor's config is {"type": blueprint id, "transform": "x,y,z[,roll,pitch,yaw]" (metres,
degrees, relative to the hero; default "0,0,0"), every other key: a blueprint attribute}, e.g.
{"type": "sensor.camera.rgb", "transform": "1.5,0,2.4", "image_size_x": 84}. "sensor.birdview"
is computed in the client: its keys are BirdviewManager's (size, radius, mode).
Camera, lidar and radar need the real backend: the embedded server refuses them, naming it.
"""
from __future__ import annotations

from typing import Any, Callable

import carla

from ..errors import ConfigError, SimulatorFailure
from ..helper import parse_transform
from . import conversions
from .sensor import CarlaSensor, PseudoSensor
from .sensor_interface import SensorInterface

BIRDVIEW = "sensor.birdview"
# blueprint id -> (conversion of each measurement, whether it reports events rather than every tick)
CARLA_SENSORS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "sensor.camera.rgb": (conversions.rgb_image, False),
    "sensor.camera.depth": (conversions.depth_image, False),
    "sensor.camera.semantic_segmentation": (conversions.semantic_image, False),
    "sensor.camera.dvs": (conversions.dvs_events, False),
    "sensor.lidar.ray_cast": (conversions.lidar_points, False),
    "sensor.lidar.ray_cast_semantic": (conversions.semantic_lidar_points, False),
    "sensor.other.radar": (conversions.radar_detections, False),
    "sensor.other.gnss": (conversions.gnss_fix, False),
    "sensor.other.imu": (conversions.imu_reading, False),
    "sensor.other.collision": (conversions.collision_event, True),
    "sensor.other.lane_invasion": (conversions.lane_invasion_event, True),
    "sensor.other.obstacle": (conversions.obstacle_event, True),
}
SENSOR_TYPES = (*CARLA_SENSORS, BIRDVIEW)
DEFAULT_TRANSFORM = "0,0,0"
OPENCV_THREADS = 1   # see _birdview
TIMEOUT_MARK = "time-out"   # how the carla client words an RPC time-out (not a refusal)


class SensorFactory:
    """Builds the sensor objects of one hero; each registers itself with the interface."""

    @staticmethod
    def spawn(name: str, config: dict[str, Any], interface: SensorInterface, hero: carla.Actor,
              blueprints: carla.BlueprintLibrary) -> CarlaSensor | PseudoSensor:
        options = dict(config)
        type_id = options.pop("type", None)
        if type_id == BIRDVIEW:
            return _birdview(name, options, interface, hero)
        if type_id not in CARLA_SENSORS:
            raise ConfigError(f"hero.sensors.{name}: unknown sensor type {type_id!r}; "
                              f"set 'type' to one of: {', '.join(SENSOR_TYPES)}")
        transform = parse_transform(options.pop("transform", DEFAULT_TRANSFORM), f"hero.sensors.{name}.transform")
        blueprint = blueprints.find(type_id)
        for attribute, value in options.items():
            if not blueprint.has_attribute(attribute):
                known = ", ".join(sorted(a.id for a in blueprint))
                raise ConfigError(f"hero.sensors.{name}: {type_id} has no attribute '{attribute}'; "
                                  f"its attributes: transform, {known}")
            try:
                blueprint.set_attribute(attribute, str(value))
            except RuntimeError as error:
                raise ConfigError(f"hero.sensors.{name}.{attribute}: {error}") from None
        blueprint.set_attribute("role_name", name)
        try:
            actor = hero.get_world().spawn_actor(blueprint, transform, attach_to=hero)
        except RuntimeError as error:
            if TIMEOUT_MARK in str(error):
                raise SimulatorFailure(f"spawning sensor '{name}': {error}") from None
            raise ConfigError(f"hero.sensors.{name}: the simulator refused {type_id}: {error}") from None
        convert, is_event = CARLA_SENSORS[type_id]
        return CarlaSensor(name, actor, convert, interface, is_event)


def _birdview(name: str, options: dict[str, Any], interface: SensorInterface, hero: carla.Actor) -> PseudoSensor:
    """Imported here: the birdview (OpenCV map drawing) is needed only by configs that ask for it.

    OpenCV is set to one thread: on images this small its worker threads cost more than they save,
    and their spinning takes the CPU the simulator needs (client CPU per step 1.0 -> 0.6 ms measured).
    """
    import cv2

    from .bird_view_manager import BirdviewManager

    cv2.setNumThreads(OPENCV_THREADS)

    try:
        manager = BirdviewManager(hero.get_world(), **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"hero.sensors.{name} ({BIRDVIEW}): {error}") from None
    return PseudoSensor(name, BIRDVIEW, lambda: manager.render(hero), interface)
