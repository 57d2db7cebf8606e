"""`cfgrl label` (being written)."""
from cfgrl.errors import CfgrlError


def label_command() -> None:
    """Not implemented yet."""
    raise CfgrlError("label is not implemented yet")
