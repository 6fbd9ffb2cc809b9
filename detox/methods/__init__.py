"""The post-training methods, one module each, registered with `detox.core.methods` (read its
docstring for what a method declares). Adding a method touches only its own module here and its
conf/method/<name>.yaml."""
