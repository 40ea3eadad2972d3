"""Errors that mean "the input is wrong", as opposed to a bug: the CLI prints them as one line."""


class LompoError(ValueError):
    """Bad input the user can fix; the message names the file, topic or field at fault."""


class BagError(LompoError):
    """A rosbag cannot be read or converted."""


class DatasetError(LompoError):
    """An episode dataset is missing, malformed or inconsistent."""


class PolicyError(LompoError):
    """An exported policy is missing, corrupt or does not match its sidecar."""


class ImageError(LompoError):
    """An image or image message cannot be decoded (encoding, size, step or data at fault)."""
