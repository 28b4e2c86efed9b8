"""The codecs' own error: a codec name, parameter or input that cannot be encoded.

FedgeError
├── WireFormatError   (fedge.errors) bytes that do not decode: bad header, body, scale, seed
└── CodecError        a codec spec that is unknown or malformed, or an input it cannot take
"""

from fedge.errors import FedgeError


class CodecError(FedgeError, ValueError):
    """A codec name or parameter that does not exist, or a vector a codec cannot encode."""
