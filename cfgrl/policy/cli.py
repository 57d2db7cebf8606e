"""`cfgrl policy` (being written)."""
from cfgrl.errors import CfgrlError


def export_command() -> None:
    """Not implemented yet."""
    raise CfgrlError("policy is not implemented yet")
