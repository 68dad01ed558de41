"""Knowledge fine-tuning (paper section 3.3): training rows and labels, loss, one step, the loop."""
