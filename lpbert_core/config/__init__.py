"""Configuration: the config files as Snakemake merges them, and each job's settings resolved and checked."""
