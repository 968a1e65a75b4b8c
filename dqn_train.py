#!/usr/bin/env python
"""Train the DQN driving agent of dqn_config.yaml with RLlib, on the embedded simulator or CARLA.

    python dqn_train.py dqn_config.yaml [-d DIR] [-n NAME] [--restore] [--overwrite] [--tboff] [--auto]

Every `evaluation.interval` iterations the greedy policy drives held-out seeds and the checkpoint
scoring best is kept as DIR/NAME/best; checkpoints every `checkpoint_freq` iterations and at the
end; --restore continues the latest one. Ctrl-C stops after the current iteration, with a final
checkpoint. Each checkpoint holds policy.pt, which dqn_inference.py drives without Ray.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # before Ray is imported: no usage reporting

import ray
import torch
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
from rich.console import Console

from dqn_example.config_file import load_config_file
from dqn_example.dqn_callbacks import DQNCallbacks
from dqn_example.rllib_config import build_dqn_config, check_resources, network_spec
from dqn_example.training import (Evaluator, Progress, StopRequest, TrainingState, check_restorable, keep_as_best,
                                  launch_tensorboard, prepare_run_folder, prune_checkpoints, save_checkpoint,
                                  stop_process, stop_reached, time_left_s)
from rllib_integration.carla_env import CarlaEnv
from rllib_integration.errors import ConfigError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130   # the shell's code for a SIGINT exit
ENV_STEPS_LIFETIME = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)   # where RLlib counts env steps
OBJECT_STORE_BYTES = 200 * 1024 ** 2   # weights and episodes only pass through it: keep it small


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configuration_file", help="configuration file (*.yaml)")
    parser.add_argument("-d", "--directory", metavar="D", default=os.path.expanduser("~/ray_results/carla_rllib"),
                        help="folder of the runs (default: ~/ray_results/carla_rllib)")
    parser.add_argument("-n", "--name", metavar="N", default="dqn_example", help="run name (default: dqn_example)")
    parser.add_argument("--restore", action="store_true", help="continue from the latest checkpoint of DIR/NAME")
    parser.add_argument("--overwrite", action="store_true", help="delete DIR/NAME and start afresh")
    parser.add_argument("--tboff", action="store_true", help="do not start TensorBoard")
    parser.add_argument("--auto", action="store_true", help="connect to a running Ray cluster (ray start) "
                                                            "instead of starting one")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    console = Console(highlight=False, markup=False, soft_wrap=True)
    logging.getLogger("ray").setLevel(logging.ERROR)   # Ray's notes on its own defaults are not the user's business

    # --- set-up: everything that can be wrong with the input is checked before Ray starts ---
    try:
        config_file = load_config_file(args.configuration_file)
        dqn_config, notices = build_dqn_config(config_file, DQNCallbacks, CarlaEnv)
        run_dir, restore_from = prepare_run_folder(args.directory, args.name, args.restore, args.overwrite)
        if restore_from is not None:
            check_restorable(restore_from, network_spec(dqn_config, config_file), args.configuration_file)
    except ConfigError as error:
        console.print(f"error: {error}")
        return EXIT_USAGE
    for notice in notices:
        console.print(f"notice (Ray 1 setting): {notice}")
    training = config_file.training
    stop, evaluation = training["stop"], training["evaluation"]
    torch.set_num_threads(training["torch_threads"])
    dqn_config.debugging(log_level="ERROR")

    try:
        ray.init(address="auto" if args.auto else None, include_dashboard=False, logging_level=logging.ERROR,
                 **({} if args.auto else {"object_store_memory": OBJECT_STORE_BYTES}))
    except ConnectionError as error:
        console.print(f"error: --auto: cannot reach a Ray cluster ({error}); start one with 'ray start --head' "
                      "(or set RAY_ADDRESS), or leave out --auto to run a local one")
        return EXIT_USAGE
    algo = evaluator = tensorboard = progress = None
    try:
        check_resources(dqn_config, ray.cluster_resources())
        seeds = list(range(evaluation["first_seed"], evaluation["first_seed"] + evaluation["episodes"]))
        evaluator = Evaluator(config_file.env_config, seeds)   # its env also checks the env config, in the driver
        if not evaluation["interval"]:
            evaluator.close()
            evaluator = None
        algo = dqn_config.build_algo()
        state = TrainingState()
        if restore_from is not None:
            algo.restore_from_path(str(restore_from))
            state = TrainingState.load(restore_from)
            console.print(f"restored {restore_from}")
        already = stop_reached(stop, algo.iteration, algo.metrics.peek(ENV_STEPS_LIFETIME, default=0),
                               state.elapsed_s)
        if already:
            console.print(f"nothing to do: the stop criterion is met already ({already}); raise it in "
                          f"{args.configuration_file} to train on")
            return 0
        progress = Progress(run_dir, console)
        if not args.tboff:
            tensorboard, url = launch_tensorboard(run_dir)
            console.print(f"TensorBoard: {url}")
        console.print(f"training {run_dir} ({', '.join(f'{k} {v:,}' for k, v in stop.items() if v is not None)})")

        # --- the loop: train, report, evaluate and checkpoint, until a stop criterion or Ctrl-C ---
        reason, checkpoint, elapsed_before, started = None, restore_from, state.elapsed_s, time.monotonic()
        with StopRequest() as stop_request:
            while reason is None:
                result = algo.train()
                state.elapsed_s = elapsed_before + time.monotonic() - started
                iteration = result["training_iteration"]
                env_steps = result.get("num_env_steps_sampled_lifetime", 0)
                progress.iteration(result, env_steps, state.elapsed_s,
                                   time_left_s(stop, iteration, env_steps, state.elapsed_s))
                reason = stop_reached(stop, iteration, env_steps, state.elapsed_s)
                reason = reason or ("Ctrl-C" if stop_request else None)
                evaluate_now = evaluator is not None and (iteration % evaluation["interval"] == 0 or reason is not None)
                checkpoint_due = training["checkpoint_freq"] and iteration % training["checkpoint_freq"] == 0
                if reason or evaluate_now or checkpoint_due:
                    checkpoint = save_checkpoint(algo, run_dir, iteration, state)
                    if evaluate_now:
                        figures = evaluator(checkpoint)
                        best = state.record_evaluation(figures, iteration)
                        state.elapsed_s = elapsed_before + time.monotonic() - started
                        state.save(checkpoint)
                        if best:
                            keep_as_best(checkpoint, run_dir)
                        progress.evaluation(figures, iteration, env_steps, state.elapsed_s, best)
                    prune_checkpoints(run_dir, training["checkpoints_to_keep"])
        console.print(f"stopped ({reason}); last checkpoint: {checkpoint}")
        if state.best_iteration is not None:
            console.print(f"best checkpoint: {run_dir / 'best'} (iteration {state.best_iteration})")
        return 0
    except ConfigError as error:
        console.print(f"error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("interrupted: no final checkpoint")
        return EXIT_INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
        stop_process(tensorboard)
        if algo is not None:
            algo.stop()
        if evaluator is not None:
            evaluator.close()
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
