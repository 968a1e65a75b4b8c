"""An mp4 of what the agent sees: the newest birdview frame of each observation, enlarged."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FPS = 20                 # one frame per 0.05 s step: real time
MIN_HEIGHT_PX = 256      # small birdviews are enlarged (nearest neighbour) to at least this


class BirdviewVideo:
    """Writes observations' last frame (1 grey or 3 RGB channels) to an mp4 file."""

    def __init__(self, path: Path | str, channels_per_frame: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._channels = channels_per_frame
        self._writer: cv2.VideoWriter | None = None

    def add(self, observation: np.ndarray) -> None:
        frame = observation[:, :, -self._channels:]
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if self._channels == 1 else cv2.COLOR_RGB2BGR)
        scale = max(1, -(-MIN_HEIGHT_PX // frame.shape[0]))
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                                           (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"cannot write the video '{self.path}' (OpenCV's mp4v writer refused it)")
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
