"""wpl_keras: the Weight Plasticity Loss for Keras, against multi-model forgetting."""

__version__ = "0.1.0"
