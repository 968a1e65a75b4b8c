"""Background traffic around the hero: autopilot vehicles and walkers, spawned in batches.

Why batches: one apply_batch_sync round trip spawns every vehicle (and registers it with the
Traffic Manager through SetAutopilot), instead of one RPC per actor.
"""
from __future__ import annotations

import logging
import random

import carla

SpawnActor = carla.command.SpawnActor
SetAutopilot = carla.command.SetAutopilot
DestroyActor = carla.command.DestroyActor
FutureActor = carla.command.FutureActor

CAR_WHEELS = 4                 # bikes and motorbikes are left out: the Traffic Manager drives cars best
WALKER_SPEED_INDEX = 1         # a walker blueprint's "speed" recommended values: (still, walking, running)
WALKER_DEFAULT_SPEED_MPS = 1.4

logger = logging.getLogger(__name__)


class BackgroundActivity:
    """The NPC vehicles and walkers of one world; destroy() removes them in one batch."""

    def __init__(self, client: carla.Client, world: carla.World, blueprints: carla.BlueprintLibrary,
                 rng: random.Random) -> None:
        self._client = client
        self._world = world
        self._blueprints = blueprints
        self._rng = rng
        self.vehicle_ids: list[int] = []
        self.walker_ids: list[int] = []
        self.controllers: list[carla.Actor] = []

    def spawn_vehicles(self, count: int, tm_port: int) -> None:
        """Autopilot vehicles at distinct random spawn points of the map."""
        points = self._world.get_map().get_spawn_points()
        if count > len(points):
            logger.warning("n_vehicles=%d but the map has %d spawn points: spawning %d", count, len(points), len(points))
        cars = [bp for bp in self._blueprints.filter("vehicle.*")
                if bp.get_attribute("number_of_wheels").as_int() == CAR_WHEELS]
        batch = []
        for point in self._rng.sample(points, min(count, len(points))):
            blueprint = self._rng.choice(cars)
            blueprint.set_attribute("role_name", "autopilot")
            batch.append(SpawnActor(blueprint, point).then(SetAutopilot(FutureActor, True, tm_port)))
        responses = self._client.apply_batch_sync(batch, False)
        self.vehicle_ids = [response.actor_id for response in responses if not response.error]
        failed = [response.error for response in responses if response.error]
        if failed:
            logger.info("%d of %d background vehicles not spawned (first error: %s)", len(failed), len(batch), failed[0])

    def spawn_walkers(self, count: int, seed: int) -> None:
        """Walkers on the navigation mesh, each steered by a controller.ai.walker to random targets."""
        self._world.set_pedestrians_seed(seed)
        locations = [self._world.get_random_location_from_navigation() for _ in range(count)]
        if any(location is None for location in locations):
            logger.warning("n_walkers=%d: no walkers spawned, the town has no walker navigation mesh "
                           "(get_random_location_from_navigation() returned None)", count)
            return
        walkers = self._blueprints.filter("walker.pedestrian.*")
        batch, speeds = [], []
        for location in locations:
            blueprint = self._rng.choice(walkers)
            if blueprint.has_attribute("is_invincible"):
                blueprint.set_attribute("is_invincible", "false")
            speeds.append(_walking_speed(blueprint))
            batch.append(SpawnActor(blueprint, carla.Transform(location)))
        responses = self._client.apply_batch_sync(batch, False)
        spawned = [(response.actor_id, speed) for response, speed in zip(responses, speeds) if not response.error]
        self.walker_ids = [walker_id for walker_id, _ in spawned]
        controller = self._blueprints.find("controller.ai.walker")
        responses = self._client.apply_batch_sync(
            [SpawnActor(controller, carla.Transform(), walker_id) for walker_id in self.walker_ids], False)
        controller_ids = [response.actor_id for response in responses if not response.error]
        self._world.tick()   # controllers act from their first tick on
        self.controllers = list(self._world.get_actors(controller_ids))
        speed_by_walker = dict(spawned)
        for controller_actor in self.controllers:
            controller_actor.start()
            controller_actor.go_to_location(self._world.get_random_location_from_navigation())
            controller_actor.set_max_speed(speed_by_walker.get(controller_actor.parent.id, WALKER_DEFAULT_SPEED_MPS))

    def destroy(self) -> None:
        """Stops the walkers' controllers, then destroys every NPC in one batch."""
        for controller_actor in self.controllers:
            controller_actor.stop()
        ids = [c.id for c in self.controllers] + self.walker_ids + self.vehicle_ids
        if ids:
            self._client.apply_batch_sync([DestroyActor(actor_id) for actor_id in ids], False)
        self.controllers, self.walker_ids, self.vehicle_ids = [], [], []


def _walking_speed(blueprint: carla.ActorBlueprint) -> float:
    if not blueprint.has_attribute("speed"):
        return WALKER_DEFAULT_SPEED_MPS
    values = blueprint.get_attribute("speed").recommended_values
    return float(values[WALKER_SPEED_INDEX]) if len(values) > WALKER_SPEED_INDEX else WALKER_DEFAULT_SPEED_MPS
