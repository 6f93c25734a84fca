from lit_ifm.callbacks.predictions import PredictionWriter
from lit_ifm.callbacks.throughput import TrainingThroughput

__all__ = ["PredictionWriter", "TrainingThroughput"]
