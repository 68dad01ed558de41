"""Models and their inputs: encoders, BERT sequences, the siamese LP-BERT model, a trained run's folder."""
