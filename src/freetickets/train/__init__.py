"""Training: configuration, the loop shared by every method, checkpoints, distributed helpers."""
from freetickets.train.config import TrainConfig, resolve, validate
from freetickets.train.runner import Trainer, train

__all__ = ["TrainConfig", "Trainer", "resolve", "train", "validate"]
