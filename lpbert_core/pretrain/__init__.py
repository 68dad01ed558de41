"""Multi-task pre-training (paper section 3.2): samples, model, loop."""
