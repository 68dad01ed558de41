"""Evaluation of trained runs: the score rule, presampled candidate lists, the predictor, per-relation breakdowns."""
