"""The DQN example: DQNExperiment, its RLModule, callbacks and training/inference machinery."""
