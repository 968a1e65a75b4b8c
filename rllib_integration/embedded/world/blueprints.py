"""The blueprint library of the embedded CARLA 0.9.16-compatible server.

The official carla client learns every blueprint it can spawn from the server: its id,
its tags and its attributes (type, value, recommended values, whether the user may change
it). Scripts then pick blueprints by id, set attributes and read them back from spawned
actors, so the values must be the ones a real CARLA 0.9.16 server sends. The server also
needs, per blueprint, what CARLA keeps in binary Unreal assets: the bounding box of the
actor and, for vehicles, enough physics to drive it. This module is the one place where
all of that lives, so the protocol layer, the world and the physics never disagree.

Sources (public, read-only):

* Attribute ids, types, defaults, recommended values and which attributes are
  read-only: CARLA's ``ActorBlueprintFunctionLibrary.cpp`` (UE4 branch) and
  ``Docs/bp_library.md``; the wire form of an attribute is
  ``LibCarla/source/carla/rpc/ActorAttribute.h``.
* Generation, base type, special type, lights and opening doors of each vehicle: the
  0.9.16 vehicle catalogue (``Docs/catalogue_vehicles.md``).
* Bounding-box extents: values printed by CARLA 0.9.14+ servers and hard-coded in
  public projects (SUMO co-simulation constants, scenario generators); the MKZ 2017
  box centre was printed by a CARLA-based perception stack.
* Physics: published manufacturer and road-test figures, cited per vehicle.

What is *not* public: the per-vehicle recommended colour lists, the driver ids of
two-wheelers, and the walker gender/speed tables live in binary factory assets. Where a
first recommended colour was seen in a published blueprint dump it is used; otherwise the
stand-in palette below is used and named as such.
"""
from __future__ import annotations

import difflib
import enum
import math
import re
from dataclasses import dataclass
from typing import Final, Literal

# --- attribute model -----------------------------------------------------------


class AttributeType(enum.IntEnum):
    """carla.ActorAttributeType; the integer is what travels on the wire."""

    Bool = 1
    Int = 2
    Float = 3
    String = 4
    RGBColor = 5


@dataclass(frozen=True)
class AttributeDef:
    """One blueprint attribute as CARLA declares it.

    CARLA has two kinds: *variations* (modifiable; the value starts as the first
    recommended value) and intrinsic *attributes* (read-only; no recommended values).
    ``restrict_to_recommended`` is the last field of CARLA's wire form: when set, only a
    recommended value is accepted (camera ``exposure_mode``, two-wheeler ``driver_id``).
    """

    id: str
    type: AttributeType
    default: str
    recommended: tuple[str, ...] = ()
    modifiable: bool = True
    restrict_to_recommended: bool = False


@dataclass(frozen=True)
class VehiclePhysics:
    """What the simplified vehicle model needs, taken from the real vehicle.

    ``max_accel_mps2`` is the mean acceleration of the published 0-100 km/h run (the
    low-speed peak is 10-30 % higher; the mean keeps the model from out-accelerating the
    real car); ``max_brake_decel_mps2`` is the mean deceleration of a published 100-0
    km/h stop; ``max_steer_deg`` is the single-track (bicycle-model) front-wheel angle at
    full lock, derived from the published kerb-to-kerb turning circle. Two-wheeler
    masses include a 75 kg rider, as their acceleration figures do.
    """

    mass_kg: float
    wheelbase_m: float
    max_steer_deg: float
    max_accel_mps2: float
    max_brake_decel_mps2: float
    drag_coefficient: float
    frontal_area_m2: float
    rolling_resistance: float
    top_speed_kmh: float


BlueprintKind = Literal["vehicle", "walker", "sensor", "traffic", "spectator", "controller", "static"]
Vector3 = tuple[float, float, float]


@dataclass(frozen=True)
class BlueprintDef:
    """Everything the server knows about one actor type.

    ``extent`` holds half sizes and ``box_center`` the box centre relative to the actor
    origin, both in metres, as carla.BoundingBox reports them. ``in_library`` is False
    for actor type ids that CARLA registers from the map (``spectator``, traffic signs
    and lights) but never lists in the blueprint library, so they cannot be spawned.
    """

    id: str
    tags: tuple[str, ...]
    attributes: tuple[AttributeDef, ...]
    extent: Vector3
    box_center: Vector3
    physics: VehiclePhysics | None
    kind: BlueprintKind
    in_library: bool = True

    def attribute(self, attr_id: str) -> AttributeDef | None:
        """The attribute with this id, or None when the blueprint has none."""
        return next((attr for attr in self.attributes if attr.id == attr_id), None)


# --- small builders ----------------------------------------------------------------


def _variation(attr_id: str, attr_type: AttributeType, *recommended: str,
               restrict: bool = False) -> AttributeDef:
    """A modifiable attribute; like CARLA, it starts at its first recommended value."""
    return AttributeDef(attr_id, attr_type, recommended[0], tuple(recommended), True, restrict)


def _fixed(attr_id: str, attr_type: AttributeType, value: str) -> AttributeDef:
    """A read-only intrinsic attribute (CARLA sends no recommended values for these)."""
    return AttributeDef(attr_id, attr_type, value, (), False)


def _tags(blueprint_id: str) -> tuple[str, ...]:
    """CARLA builds the id by joining its parts with '.' and the tags from the same parts."""
    return tuple(blueprint_id.split("."))


_BOOL, _INT, _FLOAT, _STR, _RGB = (AttributeType.Bool, AttributeType.Int, AttributeType.Float,
                                  AttributeType.String, AttributeType.RGBColor)

# role_name recommended values by actor family (FillIdAndTags and its callers)
DEFAULT_ROLE_NAMES: Final = ("default",)
VEHICLE_ROLE_NAMES: Final = ("autopilot", "scenario", "ego_vehicle")
WALKER_ROLE_NAMES: Final = ("pedestrian",)
SENSOR_ROLE_NAMES: Final = ("front", "back", "left", "right", "front_left", "front_right", "back_left", "back_right")

# --- vehicles ----------------------------------------------------------------------

SPEED_100_KMH_IN_MPS: Final = 100.0 / 3.6
RIDER_MASS_KG: Final = 75.0

# Stand-in palette for vehicles whose factory colour list is not public (see module doc).
STAND_IN_COLOR_PALETTE_RGB: Final = ("255,255,255", "0,0,0", "128,128,128", "192,192,192",
                                     "170,0,0", "0,40,110", "20,90,40")
# Stand-in driver ids for two-wheelers (the factory's SupportedDrivers list is not public).
STAND_IN_DRIVER_IDS: Final = ("0", "1", "2")


def _palette(first_rgb: str | None = None) -> tuple[str, ...]:
    """The stand-in palette, led by the first recommended colour seen in a CARLA dump."""
    if first_rgb is None:
        return STAND_IN_COLOR_PALETTE_RGB
    return (first_rgb, *(rgb for rgb in STAND_IN_COLOR_PALETTE_RGB if rgb != first_rgb))


def _mean_accel_mps2(zero_to_100_kmh_s: float) -> float:
    return round(SPEED_100_KMH_IN_MPS / zero_to_100_kmh_s, 2)


def _decel_mps2(stop_from_100_kmh_m: float) -> float:
    return round(SPEED_100_KMH_IN_MPS ** 2 / (2.0 * stop_from_100_kmh_m), 2)


def _lock_deg(wheelbase_m: float, turning_circle_m: float) -> float:
    """Single-track steer angle at full lock: sin(delta) = wheelbase / turning radius."""
    return round(math.degrees(math.asin(wheelbase_m / (turning_circle_m / 2.0))), 1)


def _car(mass_kg: float, wheelbase_m: float, turning_circle_m: float, zero_to_100_kmh_s: float,
         stop_from_100_kmh_m: float, drag_coefficient: float, frontal_area_m2: float,
         rolling_resistance: float, top_speed_kmh: float) -> VehiclePhysics:
    """Physics of a four-wheeler from the figures a spec sheet or road test publishes."""
    return VehiclePhysics(mass_kg, wheelbase_m, _lock_deg(wheelbase_m, turning_circle_m),
                          _mean_accel_mps2(zero_to_100_kmh_s), _decel_mps2(stop_from_100_kmh_m),
                          drag_coefficient, frontal_area_m2, rolling_resistance, top_speed_kmh)


def _vehicle(blueprint_id: str, *, generation: int, base_type: str, extent: Vector3,
             physics: VehiclePhysics, special_type: str = "", wheels: int = 4,
             doors: bool = False, lights: bool = False, colors: tuple[str, ...] | None = None,
             drivers: tuple[str, ...] | None = None, box_center: Vector3 | None = None) -> BlueprintDef:
    """A vehicle blueprint with the attribute set of MakeVehicleDefinition, in its order."""
    attributes = [_variation("role_name", _STR, *VEHICLE_ROLE_NAMES)]
    if colors is not None:
        attributes.append(_variation("color", _RGB, *colors))
    if drivers is not None:
        attributes.append(_variation("driver_id", _INT, *drivers, restrict=True))
    attributes += [
        _variation("sticky_control", _BOOL, "true"),
        _fixed("object_type", _STR, ""),
        _fixed("base_type", _STR, base_type),
        _fixed("special_type", _STR, special_type),
        _fixed("number_of_wheels", _INT, str(wheels)),
        _fixed("generation", _INT, str(generation)),
        _fixed("has_dynamic_doors", _BOOL, "true" if doors else "false"),
        _fixed("has_lights", _BOOL, "true" if lights else "false"),
    ]
    # Without a measured centre the box rests on the actor origin (origin at ground level).
    center = box_center if box_center is not None else (0.0, 0.0, extent[2])
    return BlueprintDef(blueprint_id, _tags(blueprint_id), tuple(attributes), extent, center, physics, "vehicle")


VEHICLES: Final[tuple[BlueprintDef, ...]] = (
    # Lincoln MKZ 2017 2.0T FWD: 1687 kg, wheelbase 2.850 m, turning circle 11.9 m,
    # 0-100 km/h ~7.5 s (0-60 mph 7.1 s), 100-0 km/h ~38 m, Cd ~0.29 (CD4 sedan),
    # A ~0.85 x 1.864 m x 1.476 m = 2.34 m2, top speed ~210 km/h (limited).
    _vehicle("vehicle.lincoln.mkz_2017", generation=1, base_type="car",
             extent=(2.4508, 1.0642, 0.7554), box_center=(0.004, 0.0, 0.719),
             colors=_palette("15,11,44"),
             physics=_car(1687, 2.850, 11.9, 7.5, 38.0, 0.29, 2.34, 0.011, 210)),
    # Lincoln MKZ 2020 2.0T FWD (same CD4 platform and powertrain as 2017): 1713 kg,
    # wheelbase 2.850 m, 0-100 km/h ~7.5 s, 100-0 km/h ~38 m, top speed ~210 km/h.
    _vehicle("vehicle.lincoln.mkz_2020", generation=2, base_type="car", doors=True, lights=True,
             extent=(2.4462, 1.1153, 0.7401), colors=_palette(), drivers=STAND_IN_DRIVER_IDS,
             physics=_car(1713, 2.850, 11.9, 7.5, 38.0, 0.29, 2.34, 0.011, 210)),
    # Tesla Model 3 Long Range AWD (2018): 1847 kg, wheelbase 2.875 m, turning circle
    # 11.6 m, 0-100 km/h 4.6 s, 100-0 km/h ~36 m, Cd 0.23, A 2.22 m2 (Tesla), 233 km/h.
    _vehicle("vehicle.tesla.model3", generation=1, base_type="car", special_type="electric",
             extent=(2.3959, 1.0817, 0.7442), colors=_palette("140,0,0"),
             physics=_car(1847, 2.875, 11.6, 4.6, 36.0, 0.23, 2.22, 0.009, 233)),
    # Audi TT Coupe 2.0 TFSI quattro (8S, 230 PS): 1410 kg, wheelbase 2.505 m, turning
    # circle 11.0 m, 0-100 km/h 5.3 s, 100-0 km/h ~35 m, Cd 0.29,
    # A ~0.85 x 1.832 m x 1.353 m = 2.11 m2, 250 km/h (limited).
    _vehicle("vehicle.audi.tt", generation=1, base_type="car",
             extent=(2.0906, 0.9971, 0.6926), colors=_palette(),
             physics=_car(1410, 2.505, 11.0, 5.3, 35.0, 0.29, 2.11, 0.011, 250)),
    # Audi A2 1.4 (75 PS, aluminium body): 895 kg, wheelbase 2.405 m, turning circle
    # 10.5 m, 0-100 km/h 12.0 s, 100-0 km/h ~40 m, Cd 0.28,
    # A ~0.85 x 1.673 m x 1.553 m = 2.21 m2, 173 km/h.
    _vehicle("vehicle.audi.a2", generation=1, base_type="car",
             extent=(1.8527, 0.8943, 0.7745), colors=_palette("168,0,27"),
             physics=_car(895, 2.405, 10.5, 12.0, 40.0, 0.28, 2.21, 0.010, 173)),
    # Audi e-tron 55 quattro (2019): 2490 kg, wheelbase 2.928 m, turning circle 12.2 m,
    # 0-100 km/h 5.7 s (boost), 100-0 km/h ~36 m, Cd 0.28, A 2.65 m2, 200 km/h (limited).
    _vehicle("vehicle.audi.etron", generation=1, base_type="car", special_type="electric",
             extent=(2.4279, 1.0164, 0.8247), colors=_palette(),
             physics=_car(2490, 2.928, 12.2, 5.7, 36.0, 0.28, 2.65, 0.009, 200)),
    # BMW 218i Gran Tourer (F46, 136 PS): 1440 kg, wheelbase 2.780 m, turning circle
    # 11.4 m, 0-100 km/h 9.8 s, 100-0 km/h ~37 m, Cd 0.30,
    # A ~0.85 x 1.800 m x 1.608 m = 2.46 m2, 200 km/h.
    _vehicle("vehicle.bmw.grandtourer", generation=1, base_type="car",
             extent=(2.3055, 1.1209, 0.8336), colors=_palette(),
             physics=_car(1440, 2.780, 11.4, 9.8, 37.0, 0.30, 2.46, 0.011, 200)),
    # Toyota Prius (XW30): 1380 kg, wheelbase 2.700 m, turning circle 10.4 m, 0-100 km/h
    # 10.4 s, 100-0 km/h ~40 m, Cd 0.25, A ~0.85 x 1.745 m x 1.490 m = 2.21 m2, 180 km/h,
    # low-rolling-resistance tyres.
    _vehicle("vehicle.toyota.prius", generation=1, base_type="car", special_type="electric",
             extent=(2.2568, 1.0034, 0.7624), colors=_palette(),
             physics=_car(1380, 2.700, 10.4, 10.4, 40.0, 0.25, 2.21, 0.008, 180)),
    # Nissan Patrol Y61 4.8 petrol: 2600 kg, wheelbase 2.970 m, turning circle 12.4 m,
    # 0-100 km/h ~11 s, 100-0 km/h ~45 m, Cd ~0.45, A ~0.85 x 1.940 m x 1.855 m = 3.06 m2,
    # ~190 km/h, all-terrain tyres.
    _vehicle("vehicle.nissan.patrol", generation=1, base_type="car",
             extent=(2.3023, 0.9658, 0.9274), colors=_palette(),
             physics=_car(2600, 2.970, 12.4, 11.0, 45.0, 0.45, 3.06, 0.013, 190)),
    # The generic Mercedes coupe is a 5.03 m two-door; reference: S 500 Coupe (C217):
    # 2045 kg, wheelbase 2.945 m, turning circle 11.9 m, 0-100 km/h 4.6 s, 100-0 km/h
    # ~35 m, Cd ~0.28, A ~0.85 x 1.899 m x 1.411 m = 2.28 m2, 250 km/h (limited).
    _vehicle("vehicle.mercedes.coupe", generation=1, base_type="car",
             extent=(2.5134, 1.0758, 0.8253), colors=_palette(),
             physics=_car(2045, 2.945, 11.9, 4.6, 35.0, 0.28, 2.28, 0.010, 250)),
    # MINI Cooper S (F56, 192 PS): 1235 kg, wheelbase 2.495 m, turning circle 10.8 m,
    # 0-100 km/h 6.8 s, 100-0 km/h ~35 m, Cd 0.31, A ~0.85 x 1.727 m x 1.414 m = 2.08 m2,
    # 235 km/h.
    _vehicle("vehicle.mini.cooper_s", generation=1, base_type="car",
             extent=(1.9029, 0.9851, 0.7375), colors=_palette(),
             physics=_car(1235, 2.495, 10.8, 6.8, 35.0, 0.31, 2.08, 0.011, 235)),
    # Ford Mustang GT (S550, 2015, 5.0 V8): 1720 kg, wheelbase 2.720 m, turning circle
    # 12.2 m, 0-100 km/h 4.8 s, 100-0 km/h ~34 m, Cd ~0.35,
    # A ~0.85 x 1.916 m x 1.381 m = 2.25 m2, 250 km/h (EU limiter).
    _vehicle("vehicle.ford.mustang", generation=1, base_type="car",
             extent=(2.3588, 0.9474, 0.6505), colors=_palette(),
             physics=_car(1720, 2.720, 12.2, 4.8, 34.0, 0.35, 2.25, 0.011, 250)),
    # Dodge Charger Pursuit 5.7 AWD (2020), Michigan State Police tests: 0-60 mph ~5.8 s
    # (0-100 km/h ~6.2 s), mean braking decel ~26.6 ft/s2 = 8.1 m/s2 (100-0 km/h in
    # ~47.6 m), top speed ~225 km/h; ~2020 kg, wheelbase 3.058 m, turning circle 11.8 m,
    # Cd ~0.34, A ~0.85 x 1.905 m x 1.480 m = 2.40 m2.
    _vehicle("vehicle.dodge.charger_police_2020", generation=2, base_type="car",
             special_type="emergency", doors=True, lights=True,
             extent=(2.6188, 1.0485, 0.8192), colors=_palette(),
             physics=_car(2020, 3.058, 11.8, 6.2, 47.6, 0.34, 2.40, 0.011, 225)),
    # Mercedes-Benz Sprinter 316 CDI (906) medium wheelbase van: ~2200 kg empty, wheelbase
    # 3.665 m, turning circle 13.4 m, 0-100 km/h ~14.5 s, 100-0 km/h ~45 m, Cd ~0.34,
    # A ~0.9 x 1.993 m x 2.43 m = 4.3 m2, ~160 km/h.
    _vehicle("vehicle.mercedes.sprinter", generation=2, base_type="van", doors=True, lights=True,
             extent=(2.9576, 0.9942, 1.2803), colors=_palette(),
             physics=_car(2200, 3.665, 13.4, 14.5, 45.0, 0.34, 4.3, 0.010, 160)),
    # Volkswagen Type 2 (T2b) 2.0 (70 PS): ~1300 kg, wheelbase 2.400 m, turning circle
    # 12.3 m, 0-100 km/h ~22 s, 100-0 km/h ~55 m (1970s drum rear brakes), Cd ~0.44,
    # A ~0.85 x 1.720 m x 1.955 m = 2.86 m2, 127 km/h.
    _vehicle("vehicle.volkswagen.t2", generation=1, base_type="van",
             extent=(2.2402, 1.0347, 1.0189), colors=_palette(),
             physics=_car(1300, 2.400, 12.3, 22.0, 55.0, 0.44, 2.86, 0.012, 127)),
    # Ford E-450 Type III ambulance (6.8 V10, 158 in wheelbase = 4.013 m): ~5400 kg in
    # service, turning circle ~16.5 m, 0-100 km/h ~20 s, 100-0 km/h ~50 m, Cd ~0.6,
    # ~140 km/h. Box body: A ~0.9 x 2.30 m x 2.43 m = 5.0 m2 (CARLA's model is 2.43 m tall,
    # lower than the ~2.85 m of the real unit).
    _vehicle("vehicle.ford.ambulance", generation=2, base_type="van", special_type="emergency",
             doors=True, lights=True, extent=(3.1828, 1.1756, 1.2157), colors=_palette(),
             physics=_car(5400, 4.013, 16.5, 20.0, 50.0, 0.60, 5.0, 0.008, 140)),
    # CARLA Motors CarlaCola is fictional: a cab-over box truck of the 7.5 t class
    # (e.g. Fuso Canter). Wheelbase 2.665 m measured between the axles of CARLA's mesh;
    # ~5000 kg part-laden, turning circle ~13 m, 0-100 km/h ~35 s laden, 100-0 km/h ~62 m
    # (6.2 m/s2; UN R13 minimum for N2 is 5.0 m/s2), Cd ~0.7, A ~5.5 m2, 90 km/h (EU
    # limiter, Directive 2002/85/EC).
    _vehicle("vehicle.carlamotors.carlacola", generation=1, base_type="truck",
             extent=(2.6019, 1.3135, 1.2337), colors=_palette(),
             physics=_car(5000, 2.665, 13.0, 35.0, 62.0, 0.70, 5.5, 0.007, 90)),
    # Tesla Cybertruck AWD (2024): 2995 kg, wheelbase 3.807 m, turning circle ~13.3 m,
    # 0-100 km/h ~4.3 s (0-60 mph 4.1 s), 100-0 km/h ~40 m, Cd ~0.34,
    # A ~0.85 x 2.027 m x 1.791 m = 3.09 m2, 180 km/h. CARLA gives it no colour attribute.
    _vehicle("vehicle.tesla.cybertruck", generation=2, base_type="truck", special_type="electric",
             extent=(3.1368, 1.1948, 1.0491),
             physics=_car(2995, 3.807, 13.3, 4.3, 40.0, 0.34, 3.09, 0.010, 180)),
    # Yamaha YZF-R6 (2017): 190 kg wet + rider, wheelbase 1.375 m, steering lock ~27 deg,
    # 0-100 km/h ~3.3 s, 100-0 km/h ~36 m, Cd ~0.6 x A ~0.55 m2 with rider tucked,
    # ~260 km/h.
    _vehicle("vehicle.yamaha.yzf", generation=1, base_type="motorcycle", wheels=2,
             extent=(1.1047, 0.4335, 0.6256), colors=_palette(), drivers=STAND_IN_DRIVER_IDS,
             physics=VehiclePhysics(190 + RIDER_MASS_KG, 1.375, 27.0, _mean_accel_mps2(3.3),
                                    _decel_mps2(36.0), 0.60, 0.55, 0.020, 260)),
    # Harley-Davidson Low Rider (FXLR 2018, Milwaukee-Eight 107): 308 kg in running order
    # + rider, wheelbase 1.615 m, steering lock ~31 deg, 0-100 km/h ~4.0 s, 100-0 km/h
    # ~40 m, upright rider Cd ~0.9 x A ~0.8 m2, ~180 km/h.
    _vehicle("vehicle.harley-davidson.low_rider", generation=1, base_type="motorcycle", wheels=2,
             extent=(1.1779, 0.3818, 0.6383), colors=_palette(), drivers=STAND_IN_DRIVER_IDS,
             physics=VehiclePhysics(308 + RIDER_MASS_KG, 1.615, 31.0, _mean_accel_mps2(4.0),
                                    _decel_mps2(40.0), 0.90, 0.80, 0.020, 180)),
    # Diamondback Century (aluminium road bike): ~10 kg + rider, wheelbase ~0.99 m,
    # handlebar lock ~45 deg; cyclist start-up acceleration ~1-1.5 m/s2 and hard braking
    # ~3.5 m/s2 (field studies), road position CdA ~0.35 m2 (Cd 0.88 x 0.40 m2), road
    # tyres Crr ~0.005, ~50 km/h sprint.
    _vehicle("vehicle.diamondback.century", generation=1, base_type="bicycle", wheels=2,
             extent=(0.8214, 0.1863, 0.5980), colors=_palette(), drivers=STAND_IN_DRIVER_IDS,
             physics=VehiclePhysics(10 + RIDER_MASS_KG, 0.99, 45.0, 1.5, 3.5, 0.88, 0.40, 0.005, 50)),
    # BH cross/hybrid bike: ~13 kg + rider, wheelbase ~1.07 m, handlebar lock ~45 deg,
    # start-up ~1.2 m/s2, braking ~3.0 m/s2, upright CdA ~0.5 m2, Crr ~0.007, ~40 km/h.
    _vehicle("vehicle.bh.crossbike", generation=1, base_type="bicycle", wheels=2,
             extent=(0.7436, 0.4296, 0.5398), colors=_palette(), drivers=STAND_IN_DRIVER_IDS,
             physics=VehiclePhysics(13 + RIDER_MASS_KG, 1.07, 45.0, 1.2, 3.0, 1.00, 0.50, 0.007, 40)),
)

# --- walkers -----------------------------------------------------------------------

# Preferred walking speed of adults ~1.4 m/s (gait studies); children (6-12 y) walk
# ~1.1 m/s. Running is taken as twice walking. CARLA's scripts read index 1 as the walking
# speed and index 2 as the running speed, index 0 being the (idle) starting value.
ADULT_SPEEDS_MPS: Final = ("0.0", "1.4", "2.8")
CHILD_SPEEDS_MPS: Final = ("0.0", "1.1", "2.2")
# Walker boxes printed by CARLA 0.9.14+: every adult 0.1877 x 0.1877 x 0.93 m, every
# child 0.25 x 0.25 x 0.55 m. A walker's origin is the centre of its capsule.
ADULT_EXTENT_M: Final = (0.1877, 0.1877, 0.93)
CHILD_EXTENT_M: Final = (0.25, 0.25, 0.55)


def _walker(number: str, *, age: str, gender: str) -> BlueprintDef:
    """A pedestrian with the attribute set of MakePedestrianDefinition.

    Generation: 0001-0014 are the pedestrians that existed before 0.9.12; the ones added
    by 0.9.12's new pedestrian set are generation 2. Ages follow the 0.9.16 pedestrian
    catalogue; genders are not publicly listed and are best-effort.
    """
    blueprint_id = f"walker.pedestrian.{number}"
    child = age == "child"
    attributes = (
        _variation("role_name", _STR, *WALKER_ROLE_NAMES),
        _fixed("gender", _STR, gender),
        _fixed("generation", _INT, "1" if int(number) <= 14 else "2"),
        _fixed("age", _STR, age),
        _variation("speed", _FLOAT, *(CHILD_SPEEDS_MPS if child else ADULT_SPEEDS_MPS)),
        _variation("is_invincible", _BOOL, "true"),
    )
    extent = CHILD_EXTENT_M if child else ADULT_EXTENT_M
    return BlueprintDef(blueprint_id, _tags(blueprint_id), attributes, extent, (0.0, 0.0, 0.0), None, "walker")


WALKERS: Final[tuple[BlueprintDef, ...]] = (
    _walker("0001", age="adult", gender="female"),
    _walker("0002", age="adult", gender="male"),
    _walker("0003", age="adult", gender="male"),
    _walker("0004", age="adult", gender="male"),
    _walker("0005", age="adult", gender="female"),
    _walker("0009", age="child", gender="female"),
    _walker("0010", age="child", gender="male"),
    _walker("0015", age="adult", gender="female"),
    _walker("0030", age="adult", gender="male"),    # police officer
    _walker("0048", age="child", gender="male"),
)

# --- sensors -----------------------------------------------------------------------

SENSOR_EXTENT_M: Final = (0.0, 0.0, 0.0)   # CARLA reports an empty box for sensors
SENSOR_TICK: Final = _variation("sensor_tick", _FLOAT, "0.0")

CAMERA_BASE: Final = (
    _variation("image_size_x", _INT, "800"),
    _variation("image_size_y", _INT, "600"),
    _variation("fov", _FLOAT, "90.0"),
    _variation("lens_circle_falloff", _FLOAT, "5.0"),
    _variation("lens_circle_multiplier", _FLOAT, "0.0"),
    _variation("lens_k", _FLOAT, "-1.0"),
    _variation("lens_kcube", _FLOAT, "0.0"),
    _variation("lens_x_size", _FLOAT, "0.08"),
    _variation("lens_y_size", _FLOAT, "0.08"),
)
# Post-process attributes of cameras built with bEnableModifyingPostProcessEffects.
CAMERA_POSTPROCESS: Final = (
    _variation("exposure_mode", _STR, "histogram", "manual", restrict=True),
    _variation("exposure_compensation", _FLOAT, "0.0"),
    _variation("shutter_speed", _FLOAT, "200.0"),
    _variation("iso", _FLOAT, "100.0"),
    _variation("fstop", _FLOAT, "1.4"),
    _variation("enable_postprocess_effects", _BOOL, "true"),
    _variation("gamma", _FLOAT, "2.4"),
    _variation("motion_blur_intensity", _FLOAT, "0.45"),
    _variation("motion_blur_max_distortion", _FLOAT, "0.35"),
    _variation("lens_flare_intensity", _FLOAT, "0.1"),
    _variation("bloom_intensity", _FLOAT, "0.675"),
    _variation("motion_blur_min_object_screen_size", _FLOAT, "0.1"),
    _variation("exposure_min_bright", _FLOAT, "10.0"),
    _variation("exposure_max_bright", _FLOAT, "12.0"),
    _variation("exposure_speed_up", _FLOAT, "3.0"),
    _variation("exposure_speed_down", _FLOAT, "1.0"),
    _variation("calibration_constant", _FLOAT, "16.0"),
    _variation("focal_distance", _FLOAT, "1000.0"),
    _variation("min_fstop", _FLOAT, "1.2"),
    _variation("blade_count", _INT, "5"),
    _variation("blur_amount", _FLOAT, "1.0"),
    _variation("blur_radius", _FLOAT, "0.0"),
    _variation("slope", _FLOAT, "0.88"),
    _variation("toe", _FLOAT, "0.55"),
    _variation("shoulder", _FLOAT, "0.26"),
    _variation("black_clip", _FLOAT, "0.0"),
    _variation("white_clip", _FLOAT, "0.04"),
    _variation("temp", _FLOAT, "6500.0"),
    _variation("tint", _FLOAT, "0.0"),
    _variation("chromatic_aberration_intensity", _FLOAT, "0.0"),
    _variation("chromatic_aberration_offset", _FLOAT, "0.0"),
)
DVS_EXTRA: Final = (
    _variation("positive_threshold", _FLOAT, "0.3"),
    _variation("negative_threshold", _FLOAT, "0.3"),
    _variation("sigma_positive_threshold", _FLOAT, "0.0"),
    _variation("sigma_negative_threshold", _FLOAT, "0.0"),
    _variation("refractory_period_ns", _INT, "0"),
    _variation("use_log", _BOOL, "true"),
    _variation("log_eps", _FLOAT, "0.001"),
)
LIDAR_COMMON: Final = (
    _variation("channels", _INT, "32"),
    _variation("range", _FLOAT, "10.0"),
    _variation("points_per_second", _INT, "56000"),
    _variation("rotation_frequency", _FLOAT, "10.0"),
    _variation("upper_fov", _FLOAT, "10.0"),
    _variation("lower_fov", _FLOAT, "-30.0"),
    _variation("horizontal_fov", _FLOAT, "360.0"),
)
LIDAR_RAY_CAST_EXTRA: Final = (
    _variation("atmosphere_attenuation_rate", _FLOAT, "0.004"),
    _variation("noise_seed", _INT, "0"),
    _variation("dropoff_general_rate", _FLOAT, "0.45"),
    _variation("dropoff_intensity_limit", _FLOAT, "0.8"),
    _variation("dropoff_zero_intensity", _FLOAT, "0.4"),
    _variation("noise_stddev", _FLOAT, "0.0"),
)
NOISE_SEED: Final = _variation("noise_seed", _INT, "0")


def _sensor(blueprint_id: str, *attributes: AttributeDef,
            role_names: tuple[str, ...] = SENSOR_ROLE_NAMES) -> BlueprintDef:
    """A sensor: role_name first (as FillIdAndTags adds it), then its variations."""
    return BlueprintDef(blueprint_id, _tags(blueprint_id), (_variation("role_name", _STR, *role_names), *attributes),
                        SENSOR_EXTENT_M, (0.0, 0.0, 0.0), None, "sensor")


def _zero_noise(*attr_ids: str) -> tuple[AttributeDef, ...]:
    return tuple(_variation(attr_id, _FLOAT, "0.0") for attr_id in attr_ids)


SENSORS: Final[tuple[BlueprintDef, ...]] = (
    # Generic sensor definitions carry only role_name (with the sensor role names).
    _sensor("sensor.other.collision"),
    _sensor("sensor.other.lane_invasion"),
    _sensor("sensor.other.obstacle", SENSOR_TICK,
            _variation("distance", _FLOAT, "5.0"),
            _variation("hit_radius", _FLOAT, "0.5"),
            _variation("only_dynamics", _BOOL, "false"),
            _variation("debug_linetrace", _BOOL, "false")),
    # GNSS, IMU and radar are built with FillIdAndTags only: role_name stays "default".
    _sensor("sensor.other.gnss", SENSOR_TICK, NOISE_SEED,
            *_zero_noise("noise_lat_stddev", "noise_lat_bias", "noise_lon_stddev", "noise_lon_bias",
                         "noise_alt_stddev", "noise_alt_bias"),
            role_names=DEFAULT_ROLE_NAMES),
    _sensor("sensor.other.imu", SENSOR_TICK, NOISE_SEED,
            *_zero_noise("noise_accel_stddev_x", "noise_accel_stddev_y", "noise_accel_stddev_z",
                         "noise_gyro_stddev_x", "noise_gyro_stddev_y", "noise_gyro_stddev_z",
                         "noise_gyro_bias_x", "noise_gyro_bias_y", "noise_gyro_bias_z"),
            role_names=DEFAULT_ROLE_NAMES),
    _sensor("sensor.other.radar", SENSOR_TICK,
            _variation("horizontal_fov", _FLOAT, "30"),
            _variation("vertical_fov", _FLOAT, "30"),
            _variation("range", _FLOAT, "100"),
            _variation("points_per_second", _INT, "1500"),
            NOISE_SEED,
            role_names=DEFAULT_ROLE_NAMES),
    _sensor("sensor.lidar.ray_cast", SENSOR_TICK, *LIDAR_COMMON, *LIDAR_RAY_CAST_EXTRA),
    _sensor("sensor.lidar.ray_cast_semantic", SENSOR_TICK, *LIDAR_COMMON),
    _sensor("sensor.camera.rgb", SENSOR_TICK, *CAMERA_BASE, *CAMERA_POSTPROCESS),
    _sensor("sensor.camera.depth", SENSOR_TICK, *CAMERA_BASE),
    _sensor("sensor.camera.semantic_segmentation", SENSOR_TICK, *CAMERA_BASE),
    _sensor("sensor.camera.dvs", SENSOR_TICK, *CAMERA_BASE, *CAMERA_POSTPROCESS, *DVS_EXTRA),
)

# --- controller, map actors, spectator ----------------------------------------------

# Speed-limit values of CARLA's ETrafficSignState (CarlaEpisode's type id table).
SPEED_LIMITS_KMH: Final = (30, 40, 50, 60, 90, 100, 120, 130)
# Approximate physical size of map-placed signs and lights (half sizes, m): a traffic-light
# head on its pole, a ~0.9 m sign plate on a ~2.5 m post.
TRAFFIC_LIGHT_EXTENT_M: Final = (0.3, 0.3, 2.5)
TRAFFIC_SIGN_EXTENT_M: Final = (0.1, 0.45, 1.25)


def _map_actor(blueprint_id: str, kind: BlueprintKind, extent: Vector3) -> BlueprintDef:
    """An actor type CARLA registers from the level; it has no attributes and no blueprint."""
    return BlueprintDef(blueprint_id, _tags(blueprint_id), (), extent, (0.0, 0.0, extent[2]), None, kind,
                        in_library=False)


OTHER_ACTORS: Final[tuple[BlueprintDef, ...]] = (
    BlueprintDef("controller.ai.walker", _tags("controller.ai.walker"),
                 (_variation("role_name", _STR, *DEFAULT_ROLE_NAMES),), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                 None, "controller"),
    _map_actor("traffic.traffic_light", "traffic", TRAFFIC_LIGHT_EXTENT_M),
    _map_actor("traffic.stop", "traffic", TRAFFIC_SIGN_EXTENT_M),
    _map_actor("traffic.yield", "traffic", TRAFFIC_SIGN_EXTENT_M),
    *(_map_actor(f"traffic.speed_limit.{kmh}", "traffic", TRAFFIC_SIGN_EXTENT_M) for kmh in SPEED_LIMITS_KMH),
    BlueprintDef("spectator", ("spectator",), (), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), None, "spectator",
                 in_library=False),
)


def _index(*groups: tuple[BlueprintDef, ...]) -> dict[str, BlueprintDef]:
    index: dict[str, BlueprintDef] = {}
    for blueprint in (bp for group in groups for bp in group):
        if blueprint.id in index:
            raise ValueError(f"blueprint id {blueprint.id!r} is defined twice")
        index[blueprint.id] = blueprint
    return index


BLUEPRINTS: Final[dict[str, BlueprintDef]] = _index(VEHICLES, WALKERS, SENSORS, OTHER_ACTORS)
# What world.get_blueprint_library() lists: everything except map-registered actor types.
LIBRARY_BLUEPRINTS: Final[tuple[BlueprintDef, ...]] = tuple(bp for bp in BLUEPRINTS.values() if bp.in_library)

# --- lookup and validation -------------------------------------------------------------

CLOSE_MATCH_COUNT: Final = 3
CLOSE_MATCH_CUTOFF: Final = 0.6


class UnknownBlueprintError(KeyError):
    """No blueprint has this id; the message names the closest ids to help with typos."""

    def __init__(self, blueprint_id: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"no blueprint with id {blueprint_id!r}{hint}")
        self.blueprint_id = blueprint_id
        self.suggestions = suggestions

    def __str__(self) -> str:
        # KeyError.__str__ would quote the message a second time.
        return str(self.args[0])


def find_blueprint(blueprint_id: str) -> BlueprintDef:
    """The blueprint (or map actor type) with this id."""
    blueprint = BLUEPRINTS.get(blueprint_id)
    if blueprint is None:
        raise UnknownBlueprintError(
            blueprint_id, difflib.get_close_matches(blueprint_id, BLUEPRINTS, CLOSE_MATCH_COUNT, CLOSE_MATCH_CUTOFF))
    return blueprint


FLOAT32_MAX: Final = 3.4028234663852886e38   # LibCarla rejects floats beyond this ("float overflow")
RGB_CHANNEL_MAX: Final = 255
_INT_RE: Final = re.compile(r"[+-]?\d+")
_FLOAT_RE: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _normalize(attr: AttributeDef, value: str) -> str:
    """Canonical wire form of ``value`` for the attribute's type; ValueError when malformed.

    Bool is lower-cased as LibCarla does; Int and RGBColor are re-spelled canonically;
    Float keeps the caller's spelling because CARLA echoes set values back verbatim.
    """
    text = value.strip()
    if attr.type is AttributeType.Bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"attribute {attr.id!r} is a Bool: expected 'true' or 'false', got {value!r}")
        return text.lower()
    if attr.type is AttributeType.Int:
        if not _INT_RE.fullmatch(text):
            raise ValueError(f"attribute {attr.id!r} is an Int: got {value!r}")
        return str(int(text))
    if attr.type is AttributeType.Float:
        if not _FLOAT_RE.fullmatch(text) or abs(float(text)) > FLOAT32_MAX:
            raise ValueError(f"attribute {attr.id!r} is a finite 32-bit Float: got {value!r}")
        return text
    if attr.type is AttributeType.RGBColor:
        channels = [channel.strip() for channel in text.split(",")]
        if len(channels) != 3 or not all(_INT_RE.fullmatch(c) and 0 <= int(c) <= RGB_CHANNEL_MAX for c in channels):
            raise ValueError(f"attribute {attr.id!r} is an RGBColor 'r,g,b' with channels 0-255: got {value!r}")
        return ",".join(str(int(c)) for c in channels)
    return value


def _same(attr: AttributeDef, left: str, right: str) -> bool:
    """Equality of two normalized values; floats compare by value ('30' equals '30.0')."""
    if attr.type is AttributeType.Float:
        return float(left) == float(right)
    return left == right


def validate_attribute(blueprint: BlueprintDef, attr_id: str, value: str | bool | int | float) -> str:
    """The value to store for ``attr_id`` on an actor of ``blueprint``, as a wire string.

    Raises ValueError for an unknown attribute (listing the valid ones), a value that does
    not parse as the attribute's type, a changed read-only attribute, or a value outside
    the recommended ones of an attribute restricted to them.
    """
    attr = blueprint.attribute(attr_id)
    if attr is None:
        valid = ", ".join(sorted(a.id for a in blueprint.attributes)) or "none"
        raise ValueError(f"{blueprint.id!r} has no attribute {attr_id!r}; valid attributes: {valid}")
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else repr(value)
    normalized = _normalize(attr, text)
    if not attr.modifiable and not _same(attr, normalized, _normalize(attr, attr.default)):
        raise ValueError(f"attribute {attr_id!r} of {blueprint.id!r} is read-only; allowed value: {attr.default!r}")
    if attr.restrict_to_recommended and not any(_same(attr, normalized, _normalize(attr, r)) for r in attr.recommended):
        allowed = ", ".join(repr(r) for r in attr.recommended)
        raise ValueError(f"attribute {attr_id!r} of {blueprint.id!r} accepts only: {allowed}; got {value!r}")
    return normalized
