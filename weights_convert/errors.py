"""The error raised by every conversion."""


class ConversionError(ValueError):
    """A weight set does not match the model: a tensor missing, repeated, unused, or of the wrong shape or dtype."""
