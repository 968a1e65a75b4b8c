"""Greedy driving episodes and their figures, without Ray.

dqn_train.py's periodic evaluation, dqn_inference.py, dqn_inference_ray.py and
benchmarks/evaluate.py all run episodes through here, so they report the same numbers. An episode
is reset with an explicit seed, so the same seed gives the same start on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import gymnasium as gym
import numpy as np

from .dqn_experiment import ENDINGS, INTERRUPTED

Policy = Callable[[np.ndarray], int]
EVALUATIONS_FILE = "evaluations.jsonl"   # dqn_train.py's log of its evaluations, in the run folder
M_PER_KM = 1000.0


@dataclass
class EpisodeResult:
    seed: int
    episode_return: float
    summary: dict[str, Any]      # DQNExperiment.summary(), or {"ending": "interrupted"}

    @property
    def success(self) -> bool:
        """Ran to the time limit without colliding or leaving the driving lanes."""
        return (self.summary["ending"] == "max_time" and self.summary["collisions"] == 0
                and self.summary["off_road_steps"] == 0)

    def describe(self) -> str:
        s = self.summary
        if s["ending"] == INTERRUPTED:
            return f"seed {self.seed}: interrupted (simulator failure), return {self.episode_return:.1f}"
        return (f"seed {self.seed}: return {self.episode_return:8.1f} | {s['steps']:5d} steps | "
                f"{s['distance_m']:6.0f} m | {s['mean_speed_kmh']:4.1f} km/h | collisions {s['collisions']} | "
                f"off-centre {s['mean_abs_offset_m']:.2f} m | speeding {100 * s['speeding_fraction']:.0f}% | "
                f"ended: {s['ending']}")


def run_episode(env: gym.Env, policy: Policy, seed: int,
                on_step: Callable[[np.ndarray], None] | None = None) -> EpisodeResult:
    """One episode from env.reset(seed=seed), acting with policy(observation)."""
    observation, _ = env.reset(seed=seed)
    if on_step is not None:
        on_step(observation)
    episode_return = 0.0
    while True:
        observation, reward, terminated, truncated, info = env.step(policy(observation))
        episode_return += reward
        if on_step is not None:
            on_step(observation)
        if terminated or truncated:
            return EpisodeResult(seed, episode_return, info.get("summary") or {"ending": INTERRUPTED})


def evaluate(env: gym.Env, policy: Policy, seeds: Iterable[int],
             on_episode: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    results = []
    for seed in seeds:
        results.append(run_episode(env, policy, seed))
        if on_episode is not None:
            on_episode(results[-1])
    return results


def aggregate(results: list[EpisodeResult]) -> dict[str, Any]:
    """Figures over episodes; rates per km and fractions of time are weighted by distance and steps."""
    done = [r.summary for r in results if r.summary["ending"] != INTERRUPTED]
    steps = sum(s["steps"] for s in done) or 1
    km = sum(s["distance_m"] for s in done) / M_PER_KM
    endings = {name: sum(r.summary["ending"] == name for r in results) for name in (*ENDINGS, INTERRUPTED)}
    return {
        "episodes": len(results),
        "success_rate": sum(r.success for r in results) / max(len(results), 1),
        "mean_return": float(np.mean([r.episode_return for r in results])) if results else 0.0,
        "mean_distance_m": float(np.mean([s["distance_m"] for s in done])) if done else 0.0,
        "mean_route_completion": float(np.mean([s["route_completion"] for s in done])) if done else 0.0,
        "mean_speed_kmh": sum(s["mean_speed_kmh"] * s["steps"] for s in done) / steps,
        "speeding_fraction": sum(s["speeding_fraction"] * s["steps"] for s in done) / steps,
        "mean_abs_offset_m": sum(s["mean_abs_offset_m"] * s["steps"] for s in done) / steps,
        "collisions_per_km": sum(s["collisions"] for s in done) / km if km else 0.0,
        "lane_invasions_per_km": sum(s["lane_invasions"] for s in done) / km if km else 0.0,
        "endings": {name: count for name, count in endings.items() if count},
    }


def score(figures: dict[str, Any]) -> tuple[float, float]:
    """What makes a checkpoint "best": more episodes driven to the end safely, then more route covered."""
    return figures["success_rate"], figures["mean_route_completion"]


def describe(figures: dict[str, Any]) -> str:
    endings = ", ".join(f"{name} {count}" for name, count in figures["endings"].items())
    return (f"{figures['episodes']} episodes: success {100 * figures['success_rate']:.0f}% | "
            f"return {figures['mean_return']:.1f} | distance {figures['mean_distance_m']:.0f} m | "
            f"route {100 * figures['mean_route_completion']:.0f}% | {figures['mean_speed_kmh']:.1f} km/h | "
            f"speeding {100 * figures['speeding_fraction']:.1f}% | off-centre {figures['mean_abs_offset_m']:.2f} m | "
            f"collisions/km {figures['collisions_per_km']:.2f} | endings: {endings}")
