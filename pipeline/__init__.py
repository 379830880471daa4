"""mario-gan: from an image search to a DCGAN that draws Super Mario."""

__version__ = "0.1.0"
