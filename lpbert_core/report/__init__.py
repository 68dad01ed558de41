"""Tables, figures and the reading study's summary, from the runs' files."""
