"""The ENAS recurrent-cell space on PTB: space, cell functions, supernet, search task, final model."""
