"""Training, evaluation and export of the genre model (see issue 3)."""
