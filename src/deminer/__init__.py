"""deminer: cryptomining incident response, from one server to a fleet."""

__version__ = "0.1.0"
