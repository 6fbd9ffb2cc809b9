"""No post-training: the pre-trained model is evaluated as it is."""

from detox.core.methods import Method, register

register(Method("none"))
