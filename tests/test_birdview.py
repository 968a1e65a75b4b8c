"""The "sensor.birdview" pseudo-sensor: geometry, map layer cache, modes, and the CLI.

Pure parts (rendering from arrays, the map layer from a client-side carla.Map parsed here) run in
this process; anything that talks to a server runs the official client in a subprocess.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import carla
import cv2
import numpy as np
import pytest

from harness import run_client
from rllib_integration.sensors import bird_view_map
from rllib_integration.sensors.bird_view_manager import route_points, validate_attributes
from rllib_integration.sensors.bird_view_map import MapBit, MapLayer, load_map_layer
from rllib_integration.sensors.bird_view_render import BOX_DTYPE, MASK_CHANNELS, BirdviewRenderer

SIZE_PX = 84
RADIUS_M = 15.0
PIXELS_PER_METRE = SIZE_PX / (2 * RADIUS_M)
CENTRE_PX = (SIZE_PX - 1) / 2
TOLERANCE_PX = 1.5
TOWN01_XODR = Path(os.environ["CARLA_MAPS_PATH"]) / "Town01.xodr"
CHANNEL = {name: index for index, name in enumerate(MASK_CHANNELS)}


def box(x: float, y: float, yaw_deg: float = 0.0, half_length: float = 2.0, half_width: float = 1.0) -> tuple:
    return (x, y, yaw_deg, 0.0, 0.0, half_length, half_width)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert len(rows), "nothing drawn in this channel"
    return float(cols.mean()), float(rows.mean())


def blobs(mask: np.ndarray) -> list[tuple[float, float]]:
    """(col, row) centroid of each connected shape in a channel."""
    count, _, _, centres = cv2.connectedComponentsWithStats(mask)
    return [tuple(centre) for centre in centres[1:count]]


@pytest.fixture(scope="module")
def town01() -> carla.Map:
    return carla.Map("Town01", TOWN01_XODR.read_text())


def sidewalk_ahead_layer() -> MapLayer:
    """Road everywhere, plus a sidewalk block at world x in [8, 12] m, y in [-1, 1] m."""
    pixels_per_metre = 2.0
    origin = (-50.0, -50.0)
    bits = np.full((201, 201), MapBit.ROAD, np.uint8)
    def pixel(metres: float) -> int:
        return int(round((metres - origin[0]) * pixels_per_metre))

    bits[pixel(-1):pixel(1) + 1, pixel(8):pixel(12) + 1] |= np.uint8(MapBit.SIDEWALK)  # rows are y, columns x
    return MapLayer(bits, origin, pixels_per_metre)


@pytest.mark.parametrize("yaw_deg", [0.0, 37.0, -120.0])
def test_actors_ahead_appear_above_and_right_appear_right_at_metre_scale(yaw_deg):
    renderer = BirdviewRenderer(sidewalk_ahead_layer(), SIZE_PX, RADIUS_M, "masks")
    yaw = np.radians(yaw_deg)
    forward, right = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    hero_xy = np.array([3.0, -4.0])
    ahead, beside = hero_xy + 10 * forward, hero_xy + 10 * right
    vehicles = np.array([box(*ahead, yaw_deg), box(*beside, yaw_deg + 90)], BOX_DTYPE)
    frame = renderer.render(np.array(box(*hero_xy, yaw_deg), BOX_DTYPE), vehicles, np.zeros(0, BOX_DTYPE),
                            np.zeros((0, 2)))
    assert centroid(frame[..., CHANNEL["hero"]]) == pytest.approx((CENTRE_PX, CENTRE_PX), abs=0.5)
    found = sorted(blobs(frame[..., CHANNEL["vehicles"]]), key=lambda centre: centre[1])
    assert found[0] == pytest.approx((CENTRE_PX, CENTRE_PX - 10 * PIXELS_PER_METRE), abs=TOLERANCE_PX)
    assert found[1] == pytest.approx((CENTRE_PX + 10 * PIXELS_PER_METRE, CENTRE_PX), abs=TOLERANCE_PX)


def test_map_crop_turns_with_the_hero_yaw_90_puts_world_x_on_the_left():
    """CARLA's yaw 90° faces +y; the +x side is then on the driver's left."""
    renderer = BirdviewRenderer(sidewalk_ahead_layer(), SIZE_PX, RADIUS_M, "masks")
    facing_x = renderer.render(np.array(box(0, 0, 0), BOX_DTYPE), np.zeros(0, BOX_DTYPE), np.zeros(0, BOX_DTYPE),
                               np.zeros((0, 2)))
    facing_y = renderer.render(np.array(box(0, 0, 90), BOX_DTYPE), np.zeros(0, BOX_DTYPE), np.zeros(0, BOX_DTYPE),
                               np.zeros((0, 2)))
    assert centroid(facing_x[..., CHANNEL["sidewalk"]]) == pytest.approx(
        (CENTRE_PX, CENTRE_PX - 10 * PIXELS_PER_METRE), abs=TOLERANCE_PX)
    assert centroid(facing_y[..., CHANNEL["sidewalk"]]) == pytest.approx(
        (CENTRE_PX - 10 * PIXELS_PER_METRE, CENTRE_PX), abs=TOLERANCE_PX)
    assert facing_y[..., CHANNEL["road"]].all()


def test_overlapping_boxes_are_filled_not_cancelled():
    """cv2.fillPoly XORs overlapping polygons; two crashed cars must still be solid."""
    renderer = BirdviewRenderer(sidewalk_ahead_layer(), SIZE_PX, RADIUS_M, "masks")
    vehicles = np.array([box(8, 0), box(9, 0.5)], BOX_DTYPE)
    frame = renderer.render(np.array(box(0, 0), BOX_DTYPE), vehicles, np.zeros(0, BOX_DTYPE), np.zeros((0, 2)))
    col, row = CENTRE_PX, CENTRE_PX - 8.5 * PIXELS_PER_METRE
    assert frame[round(row), round(col), CHANNEL["vehicles"]] == 255


def test_town_layer_has_roads_lane_markings_and_sidewalks(town01):
    geometry = bird_view_map.lane_geometry(town01)
    layer = bird_view_map.rasterise(geometry, PIXELS_PER_METRE)
    present = {bit: np.count_nonzero(layer.bits & bit) for bit in MapBit}
    assert present[MapBit.ROAD] > 10 * present[MapBit.YELLOW_MARKING] > 0
    assert present[MapBit.SIDEWALK] > 0 and present[MapBit.SHOULDER] > 0
    spawn = town01.generate_waypoints(50.0)[0].transform
    hero = np.array(box(spawn.location.x, spawn.location.y, spawn.rotation.yaw), BOX_DTYPE)
    for mode, channels in (("rgb", 3), ("masks", len(MASK_CHANNELS))):
        frame = BirdviewRenderer(layer, SIZE_PX, RADIUS_M, mode).render(
            hero, np.zeros(0, BOX_DTYPE), np.zeros(0, BOX_DTYPE), np.zeros((0, 2)))
        assert frame.shape == (SIZE_PX, SIZE_PX, channels) and frame.dtype == np.uint8
    assert set(np.unique(frame)) == {0, 255}
    assert frame[int(CENTRE_PX), int(CENTRE_PX), CHANNEL["road"]] == 255


def test_map_layer_is_cached_on_disk_and_in_memory(town01, tmp_path, monkeypatch):
    monkeypatch.setattr(bird_view_map, "_MEMORY_CACHE", {})
    drawn = load_map_layer(town01, PIXELS_PER_METRE, tmp_path)
    assert load_map_layer(town01, PIXELS_PER_METRE, tmp_path) is drawn
    files = list(tmp_path.iterdir())
    assert [path.suffix for path in files] == [".npz"], "one cache file, no temporary left behind"
    monkeypatch.setattr(bird_view_map, "_MEMORY_CACHE", {})
    loaded = load_map_layer(town01, PIXELS_PER_METRE, tmp_path)
    assert loaded is not drawn, "a fresh process memory: the layer came from the disk cache"
    assert np.array_equal(loaded.bits, drawn.bits) and loaded.origin_m == drawn.origin_m
    assert load_map_layer(town01, 2 * PIXELS_PER_METRE, tmp_path).bits.shape != drawn.bits.shape


def test_unreadable_cache_file_is_redrawn(town01, tmp_path, monkeypatch):
    monkeypatch.setattr(bird_view_map, "_MEMORY_CACHE", {})
    key = bird_view_map.cache_key(town01.to_opendrive(), PIXELS_PER_METRE)
    (tmp_path / f"{key}.npz").write_bytes(b"half a file")
    assert np.count_nonzero(load_map_layer(town01, PIXELS_PER_METRE, tmp_path).bits) > 0


@pytest.mark.parametrize(("size", "radius", "mode", "setting"), [
    (0, 15.0, "rgb", "size"), (84.5, 15.0, "rgb", "size"), (True, 15.0, "rgb", "size"),
    (84, 0.0, "rgb", "radius"), (84, float("nan"), "rgb", "radius"), (84, 15.0, "grey", "mode")])
def test_invalid_attributes_name_the_setting(size, radius, mode, setting):
    with pytest.raises(ValueError, match=f"'{setting}'"):
        validate_attributes(size, radius, mode)


def test_route_points_accepts_locations_transforms_tuples_and_arrays():
    expected = [[1.0, 2.0], [3.0, 4.0]]
    assert route_points([carla.Location(1, 2, 0), carla.Transform(carla.Location(3, 4, 0))]).tolist() == expected
    assert route_points([(1, 2), (3, 4)]).tolist() == expected
    assert route_points(np.array([[1, 2, 9], [3, 4, 9]])).tolist() == expected


CLIENT_SCENE = """
from rllib_integration.sensors.bird_view_manager import BirdviewManager
import numpy as np, cv2
client, world, settings = connect_sync()
library = world.get_blueprint_library()
blueprint = library.find("vehicle.tesla.model3")
start = world.get_map().get_spawn_points()[0]
forward, right = start.get_forward_vector(), start.get_right_vector()
def at(vector, metres):
    return carla.Transform(start.location + vector * metres, start.rotation)
hero = world.spawn_actor(blueprint, start)
others = [world.spawn_actor(blueprint, at(forward, 10.0)), world.spawn_actor(blueprint, at(right, 10.0))]
for _ in range(3):
    world.tick()
def centres(mask):
    count, _, _, found = cv2.connectedComponentsWithStats(mask)
    return sorted(found[1:count].tolist(), key=lambda centre: centre[1])
masks = BirdviewManager(world, 84, 15.0, "masks", CACHE_DIR)
frame = masks.render(hero)
again = BirdviewManager(world, 84, 15.0, "masks", CACHE_DIR).render(hero, snapshot=world.get_snapshot())
rgb = BirdviewManager(world, 84, 15.0, "rgb", CACHE_DIR).render(hero)
channel = {name: index for index, name in enumerate(masks.channels)}
emit({"shape": list(frame.shape), "dtype": str(frame.dtype), "values": sorted(set(np.unique(frame).tolist())),
      "rgb_shape": list(rgb.shape), "rgb_dtype": str(rgb.dtype), "same": bool(np.array_equal(frame, again)),
      "hero": centres(frame[..., channel["hero"]]), "vehicles": centres(frame[..., channel["vehicles"]]),
      "road_under_hero": int(frame[41, 41, channel["road"]]), "route": int(frame[..., channel["route"]].max()),
      "hero_colour": rgb[41, 41].tolist(), "ppm": masks.pixels_per_metre})
client.apply_batch_sync([carla.command.DestroyActor(actor.id) for actor in [hero] + others], False)
"""


def test_live_world_hero_centred_neighbours_placed_and_frames_repeatable(server, tmp_path):
    result = run_client(server, f"CACHE_DIR = {str(tmp_path)!r}\n", CLIENT_SCENE)
    assert result["shape"] == [SIZE_PX, SIZE_PX, len(MASK_CHANNELS)] and result["dtype"] == "uint8"
    assert result["rgb_shape"] == [SIZE_PX, SIZE_PX, 3] and result["rgb_dtype"] == "uint8"
    assert result["values"] == [0, 255]
    assert result["same"]
    assert result["hero"] == [pytest.approx([CENTRE_PX, CENTRE_PX], abs=1.0)]
    distance_px = 10 * result["ppm"]
    assert result["vehicles"] == [pytest.approx([CENTRE_PX, CENTRE_PX - distance_px], abs=TOLERANCE_PX),
                                  pytest.approx([CENTRE_PX + distance_px, CENTRE_PX], abs=TOLERANCE_PX)]
    assert result["road_under_hero"] == 255
    assert result["route"] == 255
    assert result["hero_colour"] == [138, 226, 52]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rllib_integration.sensors.bird_view_manager", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_cli_writes_png_and_stops_its_server(tmp_path):
    out = tmp_path / "bev.png"
    result = run_cli("--town", "Town01", "--out", str(out), "--size", "96", "--radius", "20", "--vehicles", "5",
                     "--walkers", "3", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pid = int(re.search(r"started embedded server pid (\d+)", result.stdout).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    image = cv2.imread(str(out))
    assert image.shape == (96, 96, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 5, "map, vehicles, walkers and hero in the picture"


def test_cli_unknown_town_is_one_line_and_exit_2(tmp_path):
    result = run_cli("--town", "Atlantis", "--out", str(tmp_path / "bev.png"), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Atlantis" in result.stderr
    assert not (tmp_path / "bev.png").exists()
