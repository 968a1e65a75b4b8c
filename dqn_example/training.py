"""The machinery behind dqn_train.py: run folder, checkpoints, evaluation, progress, TensorBoard, Ctrl-C.

Run folder DIR/NAME:
  checkpoint_000010/      RLlib's checkpoint (Algorithm.save_to_path) + policy.pt (Ray-free policy)
                          + training_state.json (wall time, best score: what --restore continues from)
  best/                   a copy of the checkpoint that scored best in the greedy evaluations
  tensorboard/            TensorBoard event files (one curve across --restore runs)
  evaluations.jsonl       one line per evaluation: minutes, env steps, figures (the learning curve)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core.rl_module.rl_module import RLModule
from rich.console import Console
from torch.utils.tensorboard import SummaryWriter

from rllib_integration.carla_env import CarlaEnv
from rllib_integration.errors import ConfigError

from .dqn_inference_model import POLICY_FILE, GreedyPolicy, PolicyFileError, QNetworkSpec, load_network, save_policy
from .evaluation import EVALUATIONS_FILE, aggregate, describe, evaluate, score

CHECKPOINT_PREFIX = "checkpoint_"
BEST = "best"
STATE_FILE = "training_state.json"
TENSORBOARD_DIR = "tensorboard"
RLLIB_MODULE_DIR = Path("learner_group", "learner", "rl_module", "default_policy")   # inside a checkpoint
SIGNAL_REPEAT_S = 1.0        # SIGINTs this close together are one Ctrl-C (Ray's processes echo it)


class RunFolderError(ConfigError):
    """The run folder cannot be used as asked (--restore with nothing to restore, a non-empty folder, ...)."""


# --- run folder and checkpoints ------------------------------------------------------------

def checkpoints(run_dir: Path) -> list[Path]:
    """The run's periodic checkpoints, oldest first."""
    numbered = {int(p.name[len(CHECKPOINT_PREFIX):]): p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*")
                if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()}
    return [numbered[number] for number in sorted(numbered)]


def prepare_run_folder(directory: str, name: str, restore: bool, overwrite: bool) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to restore or None), refusing what would lose or mix up runs."""
    run_dir = Path(directory).expanduser() / name
    if restore and overwrite:
        raise RunFolderError("--restore and --overwrite contradict each other: give one")
    if restore:
        found = checkpoints(run_dir) if run_dir.is_dir() else []
        if not found:
            raise RunFolderError(f"--restore: no checkpoint to restore in '{run_dir}' (no {CHECKPOINT_PREFIX}* "
                                 "folder); check -d/--directory and -n/--name, or start a new run without --restore")
        return run_dir, found[-1]
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunFolderError(f"'{run_dir}' is not empty: continue it with --restore, start afresh with --overwrite "
                                 "(deletes it), or choose another -n/--name")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, None


@dataclass
class TrainingState:
    """What RLlib's checkpoint does not hold and --restore needs."""

    elapsed_s: float = 0.0                 # wall time spent training, over all runs
    best_score: list[float] | None = None  # evaluation.score() of the best checkpoint
    best_iteration: int | None = None
    evaluations: int = 0

    @classmethod
    def load(cls, checkpoint: Path) -> TrainingState:
        path = checkpoint / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()

    def save(self, checkpoint: Path) -> None:
        (checkpoint / STATE_FILE).write_text(json.dumps(asdict(self)))

    def record_evaluation(self, figures: dict[str, Any], iteration: int) -> bool:
        """Counts an evaluation; True when it is the best so far (see evaluation.score)."""
        self.evaluations += 1
        if self.best_score is not None and list(score(figures)) <= self.best_score:
            return False
        self.best_score, self.best_iteration = list(score(figures)), iteration
        return True


def save_checkpoint(algo: Algorithm, run_dir: Path, iteration: int, state: TrainingState) -> Path:
    """RLlib's checkpoint plus the Ray-free policy file, taken from that very checkpoint."""
    path = run_dir / f"{CHECKPOINT_PREFIX}{iteration:06d}"
    algo.save_to_path(str(path))
    module = RLModule.from_checkpoint(str(path / RLLIB_MODULE_DIR))
    save_policy(path / POLICY_FILE, module.network_spec(), module.policy_state_dict())
    state.save(path)
    return path


def check_restorable(checkpoint: Path, spec: QNetworkSpec, config_path: str) -> None:
    """Refuses to restore weights into a network of another shape (RLlib would fail deep in torch)."""
    try:
        trained = load_network(checkpoint).spec
    except PolicyFileError as error:
        raise RunFolderError(f"--restore: {error}") from None
    if trained != spec:
        raise RunFolderError(f"{checkpoint} holds a network for observations {tuple(trained.observation_shape)}, "
                             f"{trained.num_actions} actions, conv {[f.as_list() for f in trained.conv_filters]}, "
                             f"heads {list(trained.hiddens)}; {config_path} builds {tuple(spec.observation_shape)}, "
                             f"{spec.num_actions}, {[f.as_list() for f in spec.conv_filters]}, {list(spec.hiddens)}: "
                             "restore with the config it was trained with, or start a new run")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Deletes the oldest periodic checkpoints beyond `keep` ("best" is a separate copy)."""
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def keep_as_best(checkpoint: Path, run_dir: Path) -> Path:
    best = run_dir / BEST
    staging = run_dir / f".{BEST}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    shutil.rmtree(best, ignore_errors=True)
    staging.rename(best)
    return best


# --- greedy evaluation --------------------------------------------------------------------

@dataclass
class Evaluator:
    """Greedy episodes of a checkpoint's policy file on held-out seeds, in a CarlaEnv of the driver.

    Creating it starts that env and resets it once, which checks the env config for real (server,
    town, hero, sensors) before RLlib starts env runners, where a mistake would surface as an
    unrelated error.
    """

    env_config: dict[str, Any]
    seeds: list[int]
    env: CarlaEnv = field(init=False)

    def __post_init__(self) -> None:
        self.env = CarlaEnv(self.env_config)
        try:
            self.env.reset(seed=self.seeds[0] if self.seeds else None)
        except BaseException:
            self.env.close()
            raise

    def __call__(self, checkpoint: Path) -> dict[str, Any]:
        policy = GreedyPolicy(load_network(checkpoint))
        return aggregate(evaluate(self.env, policy, self.seeds))

    def close(self) -> None:
        self.env.close()


# --- stop criteria and progress -----------------------------------------------------------

def stop_reached(stop: dict[str, Any], iteration: int, env_steps: float, elapsed_s: float) -> str | None:
    """The first stop criterion met, as text; None to go on."""
    for key, value in (("training_iteration", iteration), ("num_env_steps_sampled_lifetime", env_steps),
                       ("time_total_s", elapsed_s)):
        if stop.get(key) is not None and value >= stop[key]:
            return f"{key} {value:,.0f} ≥ {stop[key]:,}"
    return None


def time_left_s(stop: dict[str, Any], iteration: int, env_steps: float, elapsed_s: float) -> float | None:
    """Estimated wall time to the nearest stop criterion, at the pace so far."""
    estimates = []
    if stop.get("time_total_s") is not None:
        estimates.append(stop["time_total_s"] - elapsed_s)
    if stop.get("num_env_steps_sampled_lifetime") is not None and env_steps:
        estimates.append((stop["num_env_steps_sampled_lifetime"] - env_steps) * elapsed_s / env_steps)
    if stop.get("training_iteration") is not None and iteration:
        estimates.append((stop["training_iteration"] - iteration) * elapsed_s / iteration)
    return max(min(estimates), 0.0) if estimates else None


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def flatten(result: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) for every number in a nested result dict, tags joined with '/'."""
    for key, value in result.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield tag, float(value)
        elif hasattr(value, "item") and getattr(value, "size", 0) == 1:   # numpy scalars
            number = value.item()
            if isinstance(number, (int, float)) and math.isfinite(number):
                yield tag, float(number)


class Progress:
    """One terminal line per iteration and per evaluation; TensorBoard scalars; evaluations.jsonl."""

    def __init__(self, run_dir: Path, console: Console) -> None:
        self.console = console
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        self._evaluations = run_dir / EVALUATIONS_FILE
        self._last: tuple[float, float] | None = None   # (wall clock, env steps) at the last iteration

    def iteration(self, result: dict[str, Any], env_steps: float, elapsed_s: float, left_s: float | None) -> None:
        now = time.monotonic()
        rate = (env_steps - self._last[1]) / (now - self._last[0]) if self._last else math.nan
        self._last = (now, env_steps)
        runners = result.get("env_runners", {})
        episode_return = runners.get("episode_return_mean", math.nan)
        completion = runners.get("route_completion", math.nan)
        self.console.print(
            f"iter {result['training_iteration']:4d} | env steps {env_steps:9,.0f} | "
            f"return {episode_return:7.1f} | route {100 * completion:3.0f}% | "
            f"{f'{rate:5.0f}' if math.isfinite(rate) else '    -'} steps/s | "
            f"elapsed {format_duration(elapsed_s)} | left {format_duration(left_s)}", highlight=False)
        step = int(env_steps)
        for tag, value in flatten({key: result[key] for key in ("env_runners", "learners", "timers", "perf",
                                                               "replay_buffer") if key in result}):
            self.writer.add_scalar(tag, value, step)
        if math.isfinite(rate):
            self.writer.add_scalar("throughput/env_steps_per_s", rate, step)

    def evaluation(self, figures: dict[str, Any], iteration: int, env_steps: float, elapsed_s: float,
                   best: bool) -> None:
        self.console.print(f"  eval @ iter {iteration}: {describe(figures)}{'  [best]' if best else ''}",
                           highlight=False)
        step = int(env_steps)
        for tag, value in flatten({key: value for key, value in figures.items() if key != "endings"}):
            self.writer.add_scalar(f"evaluation/{tag}", value, step)
        with self._evaluations.open("a") as out:
            out.write(json.dumps({"iteration": iteration, "env_steps": step, "minutes": elapsed_s / 60,
                                  "best": best, **figures}) + "\n")

    def close(self) -> None:
        self.writer.close()


# --- TensorBoard ----------------------------------------------------------------------------

def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def launch_tensorboard(logdir: Path, host: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    """TensorBoard on `host` (loopback: reach it remotely through an SSH tunnel), in its own process
    group so a Ctrl-C meant for training does not kill it first; stop it with stop_process()."""
    port = free_port(host)
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host,
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    return process, f"http://{host}:{port}/"


def stop_process(process: subprocess.Popen | None) -> None:
    """Stops a process started with start_new_session=True, and its group."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- Ctrl-C ---------------------------------------------------------------------------------

class StopRequest:
    """The first Ctrl-C asks training to stop after the current iteration (then a final checkpoint);
    another one later stops at once, through the handler that was there before."""

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def __bool__(self) -> bool:
        return self.requested_at is not None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            print("\nCtrl-C: stopping after this iteration with a final checkpoint (Ctrl-C again to quit now)",
                  file=sys.stderr, flush=True)
        elif now - self.requested_at > SIGNAL_REPEAT_S:
            signal.signal(signal.SIGINT, self._previous)
            if callable(self._previous):
                self._previous(signum, frame)
            raise KeyboardInterrupt
