"""LP-BERT reproduction: the logic behind the Snakemake pipeline.

Data flows one way: raw files -> text tables -> token shards -> model -> ranks -> tables.
Each module has one concern; Snakemake scripts only call into this package.
"""

__version__ = "0.1.0"
