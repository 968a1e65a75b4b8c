"""RLlib metrics of the DQN example, from the summary DQNExperiment puts in an episode's last info.

The original logged the mean heading deviation; this adds distance driven, route completion,
collisions, lane invasions, speeding, lane-centre offset and why episodes ended. RLlib reports
them under result["env_runners"] (means over the last METRICS_WINDOW episodes), which
dqn_train.py writes to TensorBoard.
"""
from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from .dqn_experiment import ENDINGS, INTERRUPTED

METRICS_WINDOW = 100        # episodes each mean is taken over
SUMMARY_METRICS = ("heading_deviation", "distance_m", "route_completion", "collisions", "lane_invasions",
                   "speeding_fraction", "mean_abs_offset_m", "mean_speed_kmh")


class DQNCallbacks(RLlibCallback):
    """Logs each finished episode's summary; an interrupted episode counts only as an ending."""

    def on_episode_end(self, *, episode: Any, metrics_logger: MetricsLogger | None = None, **kwargs: Any) -> None:
        if metrics_logger is None:
            return
        summary = episode.get_infos(-1).get("summary")
        ending = summary["ending"] if summary else INTERRUPTED
        for name in (*ENDINGS, INTERRUPTED):
            metrics_logger.log_value(f"ending_{name}", float(ending == name), reduce="mean", window=METRICS_WINDOW)
        if summary:
            for name in SUMMARY_METRICS:
                metrics_logger.log_value(name, float(summary[name]), reduce="mean", window=METRICS_WINDOW)
