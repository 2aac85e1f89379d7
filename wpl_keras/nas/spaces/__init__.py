"""The search spaces, each with its supernet, search task and final model."""
