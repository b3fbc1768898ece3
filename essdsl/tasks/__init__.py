"""Tasks: the data, the model around a compiled cell, the loss and the metrics of one job
(language modelling today)."""
