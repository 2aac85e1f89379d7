"""Small utilities shared across wpl_keras."""
