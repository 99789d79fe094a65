"""Scoring and prediction with a trained network: restore, evaluate, the
probability files, prediction inputs and their framing."""
