"""Closed-loop online experiments on the simulated world: arms served by real predictors, users who act on what
they are shown according to the world's ground truth, their actions fed back through the stream processor."""
