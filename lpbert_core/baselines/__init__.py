"""The KG-BERT-style cross-encoder baseline of Table 3: model and data, training, timed ranking."""
