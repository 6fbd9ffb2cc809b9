"""No post-training: the pre-trained model is evaluated as it is."""

from detox.methods import Method, register

register(Method("none"))
