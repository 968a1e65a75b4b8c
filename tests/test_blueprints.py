"""Tests of the blueprint library data: CARLA 0.9.16 attribute semantics and plausible physics."""
from __future__ import annotations

import pytest

from rllib_integration.embedded.world.blueprints import (
    BLUEPRINTS,
    LIBRARY_BLUEPRINTS,
    OTHER_ACTORS,
    SENSORS,
    VEHICLES,
    WALKERS,
    AttributeType,
    BlueprintDef,
    UnknownBlueprintError,
    find_blueprint,
    validate_attribute,
)

ALL = (*VEHICLES, *WALKERS, *SENSORS, *OTHER_ACTORS)

# Full length (m) and height (m) of the bounding box a real vehicle of each base type has.
LENGTH_RANGE_M = {"car": (3.0, 6.0), "van": (4.0, 7.5), "truck": (4.5, 12.0),
                  "motorcycle": (1.5, 2.7), "bicycle": (1.3, 2.2)}
# Box width includes mirrors: 2.55 m is the EU body limit for trucks, mirrors add ~0.4 m.
WIDTH_MAX_M = {"car": 2.4, "van": 2.6, "truck": 3.0, "motorcycle": 1.0, "bicycle": 1.0}
HEIGHT_RANGE_M = {"car": (1.2, 2.3), "van": (1.8, 3.0), "truck": (1.8, 4.2),
                  "motorcycle": (0.9, 1.6), "bicycle": (0.9, 1.6)}
# Mass (kg; two-wheelers with rider), mean acceleration and braking (m/s2), top speed (km/h).
MASS_RANGE_KG = {"car": (800, 3200), "van": (1000, 7000), "truck": (2500, 30000),
                 "motorcycle": (150, 450), "bicycle": (50, 150)}
ACCEL_RANGE_MPS2 = {"car": (1.5, 12.0), "van": (0.8, 5.0), "truck": (0.3, 8.0),
                    "motorcycle": (3.0, 12.0), "bicycle": (0.5, 3.0)}
BRAKE_RANGE_MPS2 = {"car": (6.0, 11.5), "van": (5.0, 10.5), "truck": (4.0, 10.5),
                    "motorcycle": (6.0, 11.5), "bicycle": (2.0, 7.0)}
TOP_SPEED_RANGE_KMH = {"car": (120, 330), "van": (90, 200), "truck": (80, 260),
                       "motorcycle": (100, 330), "bicycle": (20, 70)}

REQUIRED_VEHICLE_ATTRIBUTES = {
    "role_name": AttributeType.String, "sticky_control": AttributeType.Bool,
    "object_type": AttributeType.String, "base_type": AttributeType.String,
    "special_type": AttributeType.String, "number_of_wheels": AttributeType.Int,
    "generation": AttributeType.Int, "has_dynamic_doors": AttributeType.Bool,
    "has_lights": AttributeType.Bool,
}
READ_ONLY_VEHICLE_ATTRIBUTES = {"object_type", "base_type", "special_type", "number_of_wheels",
                                "generation", "has_dynamic_doors", "has_lights"}


def base_type(bp: BlueprintDef) -> str:
    attr = bp.attribute("base_type")
    assert attr is not None
    return attr.default


# --- identity ------------------------------------------------------------------------


def test_ids_are_unique_and_indexed() -> None:
    ids = [bp.id for bp in ALL]
    assert len(ids) == len(set(ids))
    assert set(BLUEPRINTS) == set(ids)
    assert all(BLUEPRINTS[bp.id] is bp for bp in ALL)


def test_tags_are_the_id_parts() -> None:
    for bp in ALL:
        assert bp.tags == tuple(bp.id.split(".")), bp.id


def test_required_blueprints_present() -> None:
    required = {
        "vehicle.lincoln.mkz_2017", "vehicle.tesla.model3", "vehicle.audi.tt", "vehicle.audi.a2",
        "vehicle.bmw.grandtourer", "vehicle.toyota.prius", "vehicle.nissan.patrol",
        "vehicle.mercedes.coupe", "vehicle.mini.cooper_s", "vehicle.ford.mustang",
        "vehicle.mercedes.sprinter", "vehicle.carlamotors.carlacola", "vehicle.yamaha.yzf",
        "vehicle.diamondback.century", "controller.ai.walker", "traffic.traffic_light",
        "traffic.stop", "traffic.yield", "traffic.speed_limit.30", "traffic.speed_limit.60",
        "traffic.speed_limit.90", "spectator", "sensor.other.collision", "sensor.other.obstacle",
        "sensor.other.gnss", "sensor.other.imu", "sensor.other.lane_invasion", "sensor.other.radar",
        "sensor.lidar.ray_cast", "sensor.lidar.ray_cast_semantic", "sensor.camera.rgb",
        "sensor.camera.depth", "sensor.camera.semantic_segmentation", "sensor.camera.dvs",
    }
    assert required <= set(BLUEPRINTS)
    assert len(VEHICLES) >= 14
    assert len(WALKERS) >= 10


def test_map_actor_types_are_not_in_the_library() -> None:
    library_ids = {bp.id for bp in LIBRARY_BLUEPRINTS}
    for type_id in ("spectator", "traffic.traffic_light", "traffic.stop", "traffic.speed_limit.30"):
        assert type_id not in library_ids
        assert find_blueprint(type_id).attributes == ()
    assert "controller.ai.walker" in library_ids
    assert all(bp.kind in ("vehicle", "walker", "sensor", "controller") for bp in LIBRARY_BLUEPRINTS)


def test_kinds_match_id_prefix() -> None:
    prefix_kind = {"vehicle": "vehicle", "walker": "walker", "sensor": "sensor",
                   "traffic": "traffic", "controller": "controller", "spectator": "spectator"}
    for bp in ALL:
        assert bp.kind == prefix_kind[bp.tags[0]], bp.id


# --- attribute semantics ---------------------------------------------------------------


@pytest.mark.parametrize("bp", ALL, ids=lambda bp: bp.id)
def test_attribute_definitions_follow_carla_rules(bp: BlueprintDef) -> None:
    attr_ids = [attr.id for attr in bp.attributes]
    assert len(attr_ids) == len(set(attr_ids))
    for attr in bp.attributes:
        if attr.modifiable:
            # A variation starts at its first recommended value.
            assert attr.recommended and attr.default == attr.recommended[0], attr.id
        else:
            assert attr.recommended == () and not attr.restrict_to_recommended, attr.id
        assert validate_attribute(bp, attr.id, attr.default) is not None
        for value in attr.recommended:
            validate_attribute(bp, attr.id, value)


@pytest.mark.parametrize("bp", VEHICLES, ids=lambda bp: bp.id)
def test_vehicle_attributes(bp: BlueprintDef) -> None:
    for attr_id, attr_type in REQUIRED_VEHICLE_ATTRIBUTES.items():
        attr = bp.attribute(attr_id)
        assert attr is not None and attr.type is attr_type, attr_id
        assert attr.modifiable is (attr_id not in READ_ONLY_VEHICLE_ATTRIBUTES), attr_id
    assert bp.attribute("role_name").recommended == ("autopilot", "scenario", "ego_vehicle")
    assert bp.attribute("generation").default in ("1", "2")
    wheels = bp.attribute("number_of_wheels").default
    if base_type(bp) in ("motorcycle", "bicycle"):
        assert wheels == "2"
        driver = bp.attribute("driver_id")
        assert driver is not None and driver.restrict_to_recommended and driver.type is AttributeType.Int
    else:
        assert wheels == "4"
    color = bp.attribute("color")
    if bp.id == "vehicle.tesla.cybertruck":
        assert color is None   # CARLA's Cybertruck has no colour attribute
    else:
        assert color is not None and color.type is AttributeType.RGBColor
        assert len(color.recommended) > 1 and color.default in color.recommended


def test_vehicle_catalogue_facts() -> None:
    assert find_blueprint("vehicle.tesla.model3").attribute("special_type").default == "electric"
    assert find_blueprint("vehicle.ford.ambulance").attribute("special_type").default == "emergency"
    assert base_type(find_blueprint("vehicle.mercedes.sprinter")) == "van"
    assert base_type(find_blueprint("vehicle.carlamotors.carlacola")) == "truck"
    mkz_2020 = find_blueprint("vehicle.lincoln.mkz_2020")
    assert mkz_2020.attribute("has_lights").default == "true"
    assert mkz_2020.attribute("has_dynamic_doors").default == "true"
    assert find_blueprint("vehicle.lincoln.mkz_2017").attribute("has_lights").default == "false"


@pytest.mark.parametrize("bp", WALKERS, ids=lambda bp: bp.id)
def test_walker_attributes(bp: BlueprintDef) -> None:
    speed = bp.attribute("speed")
    assert speed is not None and speed.type is AttributeType.Float and speed.modifiable
    idle, walk, run = (float(v) for v in speed.recommended)
    assert idle == 0.0 and 0.5 <= walk < run <= 5.0
    assert bp.attribute("is_invincible").default == "true"
    assert bp.attribute("age").default in ("adult", "child", "teenager", "elderly")
    assert bp.attribute("gender").default in ("female", "male", "other")
    assert not bp.attribute("age").modifiable and not bp.attribute("gender").modifiable
    assert bp.attribute("role_name").default == "pedestrian"
    height_m = 2 * bp.extent[2]
    assert (0.9 <= height_m <= 1.3) if bp.attribute("age").default == "child" else (1.5 <= height_m <= 2.0)


def test_sensor_attributes() -> None:
    for bp in SENSORS:
        assert bp.attribute("role_name").type is AttributeType.String
        if bp.id not in ("sensor.other.collision", "sensor.other.lane_invasion"):
            tick = bp.attribute("sensor_tick")
            assert tick is not None and tick.type is AttributeType.Float and tick.default == "0.0"
    assert [a.id for a in find_blueprint("sensor.other.collision").attributes] == ["role_name"]
    rgb = find_blueprint("sensor.camera.rgb")
    assert (rgb.attribute("image_size_x").default, rgb.attribute("image_size_y").default) == ("800", "600")
    assert rgb.attribute("fov").default == "90.0"
    assert rgb.attribute("exposure_mode").restrict_to_recommended
    assert find_blueprint("sensor.camera.depth").attribute("gamma") is None
    lidar = find_blueprint("sensor.lidar.ray_cast")
    assert lidar.attribute("channels").type is AttributeType.Int and lidar.attribute("channels").default == "32"
    assert lidar.attribute("range").default == "10.0"
    assert find_blueprint("sensor.lidar.ray_cast_semantic").attribute("noise_stddev") is None
    obstacle = find_blueprint("sensor.other.obstacle")
    assert obstacle.attribute("distance").default == "5.0"
    assert obstacle.attribute("only_dynamics").type is AttributeType.Bool
    imu = find_blueprint("sensor.other.imu")
    assert imu.attribute("noise_seed").type is AttributeType.Int
    assert imu.attribute("role_name").recommended == ("default",)
    assert find_blueprint("sensor.camera.rgb").attribute("role_name").default == "front"
    assert find_blueprint("sensor.camera.dvs").attribute("positive_threshold").default == "0.3"


# --- size and physics ----------------------------------------------------------------


@pytest.mark.parametrize("bp", VEHICLES, ids=lambda bp: bp.id)
def test_vehicle_box_is_plausible_for_its_base_type(bp: BlueprintDef) -> None:
    kind = base_type(bp)
    length_m, width_m, height_m = (2 * half for half in bp.extent)
    assert LENGTH_RANGE_M[kind][0] <= length_m <= LENGTH_RANGE_M[kind][1]
    assert HEIGHT_RANGE_M[kind][0] <= height_m <= HEIGHT_RANGE_M[kind][1]
    assert width_m < length_m and width_m <= WIDTH_MAX_M[kind]
    assert 0.0 < bp.box_center[2] <= bp.extent[2] + 0.05   # box sits on or just above the ground


@pytest.mark.parametrize("bp", VEHICLES, ids=lambda bp: bp.id)
def test_vehicle_physics_is_plausible(bp: BlueprintDef) -> None:
    physics = bp.physics
    assert physics is not None
    kind = base_type(bp)
    assert MASS_RANGE_KG[kind][0] <= physics.mass_kg <= MASS_RANGE_KG[kind][1]
    assert ACCEL_RANGE_MPS2[kind][0] <= physics.max_accel_mps2 <= ACCEL_RANGE_MPS2[kind][1]
    assert BRAKE_RANGE_MPS2[kind][0] <= physics.max_brake_decel_mps2 <= BRAKE_RANGE_MPS2[kind][1]
    assert TOP_SPEED_RANGE_KMH[kind][0] <= physics.top_speed_kmh <= TOP_SPEED_RANGE_KMH[kind][1]
    assert 0.15 <= physics.drag_coefficient <= 1.2
    assert 0.2 <= physics.frontal_area_m2 <= 12.0
    assert 0.002 <= physics.rolling_resistance <= 0.03
    assert 15.0 <= physics.max_steer_deg <= 50.0
    # The axles lie inside the box, and a car's wheelbase is most of its length.
    length_m = 2 * bp.extent[0]
    assert 0.4 * length_m < physics.wheelbase_m < length_m
    # Frontal area cannot exceed the box's cross-section.
    assert physics.frontal_area_m2 <= (2 * bp.extent[1]) * (2 * bp.extent[2])


def test_non_vehicles_have_no_physics() -> None:
    assert all(bp.physics is None for bp in (*WALKERS, *SENSORS, *OTHER_ACTORS))


def test_known_carla_boxes() -> None:
    mkz = find_blueprint("vehicle.lincoln.mkz_2017")
    assert mkz.extent == pytest.approx((2.45, 1.06, 0.76), abs=0.01)
    assert find_blueprint("vehicle.tesla.model3").extent == pytest.approx((2.40, 1.08, 0.74), abs=0.01)


# --- lookup --------------------------------------------------------------------------


def test_unknown_blueprint_suggests_close_matches() -> None:
    with pytest.raises(UnknownBlueprintError) as caught:
        find_blueprint("vehicle.tesla.modle3")
    assert isinstance(caught.value, KeyError)
    assert "vehicle.tesla.model3" in caught.value.suggestions
    message = str(caught.value)
    assert "vehicle.tesla.model3" in message and not message.startswith('"')


def test_unknown_blueprint_without_match_has_no_hint() -> None:
    with pytest.raises(KeyError) as caught:
        find_blueprint("zzzz")
    assert "did you mean" not in str(caught.value)


# --- validate_attribute ------------------------------------------------------------------


@pytest.fixture
def rgb() -> BlueprintDef:
    return find_blueprint("sensor.camera.rgb")


@pytest.fixture
def model3() -> BlueprintDef:
    return find_blueprint("vehicle.tesla.model3")


@pytest.mark.parametrize(("value", "expected"), [("TRUE", "true"), (" false ", "false"), (True, "true")])
def test_bool_is_normalized(rgb: BlueprintDef, value: object, expected: str) -> None:
    assert validate_attribute(rgb, "enable_postprocess_effects", value) == expected


@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_bool_rejects_other_words(rgb: BlueprintDef, value: str) -> None:
    with pytest.raises(ValueError, match="enable_postprocess_effects"):
        validate_attribute(rgb, "enable_postprocess_effects", value)


def test_int_is_normalized_and_checked(rgb: BlueprintDef) -> None:
    assert validate_attribute(rgb, "image_size_x", " +1280 ") == "1280"
    assert validate_attribute(rgb, "image_size_x", 640) == "640"
    for bad in ("12.5", "abc", "1_000"):
        with pytest.raises(ValueError, match="image_size_x"):
            validate_attribute(rgb, "image_size_x", bad)


def test_float_is_checked_and_keeps_spelling(rgb: BlueprintDef) -> None:
    assert validate_attribute(rgb, "fov", "110") == "110"
    assert validate_attribute(rgb, "fov", " 1e2 ") == "1e2"
    assert validate_attribute(rgb, "fov", 75.5) == "75.5"
    for bad in ("nan", "inf", "1e39", "90deg", ""):
        with pytest.raises(ValueError, match="fov"):
            validate_attribute(rgb, "fov", bad)


def test_color_is_normalized_and_range_checked(model3: BlueprintDef) -> None:
    assert validate_attribute(model3, "color", " 10, 20 ,30 ") == "10,20,30"
    for bad in ("256,0,0", "-1,0,0", "1,2", "1,2,3,4", "red"):
        with pytest.raises(ValueError, match="color"):
            validate_attribute(model3, "color", bad)


def test_string_accepts_anything(model3: BlueprintDef) -> None:
    assert validate_attribute(model3, "role_name", "hero") == "hero"


def test_read_only_attribute_accepts_only_its_value(model3: BlueprintDef) -> None:
    assert validate_attribute(model3, "number_of_wheels", "4") == "4"
    with pytest.raises(ValueError, match=r"number_of_wheels.*read-only.*'4'"):
        validate_attribute(model3, "number_of_wheels", "3")
    with pytest.raises(ValueError, match="base_type"):
        validate_attribute(model3, "base_type", "truck")


def test_restricted_attribute_accepts_only_recommended(rgb: BlueprintDef) -> None:
    assert validate_attribute(rgb, "exposure_mode", "manual") == "manual"
    with pytest.raises(ValueError, match=r"exposure_mode.*'histogram', 'manual'"):
        validate_attribute(rgb, "exposure_mode", "auto")
    bike = find_blueprint("vehicle.diamondback.century")
    allowed = bike.attribute("driver_id").recommended
    assert validate_attribute(bike, "driver_id", allowed[-1]) == allowed[-1]
    with pytest.raises(ValueError, match="driver_id"):
        validate_attribute(bike, "driver_id", "999")


def test_unknown_attribute_lists_valid_ones(model3: BlueprintDef) -> None:
    with pytest.raises(ValueError, match=r"'colour'.*color.*role_name"):
        validate_attribute(model3, "colour", "1,2,3")
    with pytest.raises(ValueError, match="none"):
        validate_attribute(find_blueprint("spectator"), "role_name", "x")
