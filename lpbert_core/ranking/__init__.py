"""Filtered ranking shared by every scorer: ranks and metrics, ranking a split, candidate lists, result keys."""
