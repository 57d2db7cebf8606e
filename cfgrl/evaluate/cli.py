"""`cfgrl evaluate` (being written)."""
from cfgrl.errors import CfgrlError


def evaluate_command() -> None:
    """Not implemented yet."""
    raise CfgrlError("evaluate is not implemented yet")
