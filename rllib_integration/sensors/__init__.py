"""Sensors attached to the hero: CARLA's own sensors and the "sensor.birdview" pseudo-sensor."""
