"""`cfgrl train` (being written)."""
from cfgrl.errors import CfgrlError


def train_command() -> None:
    """Not implemented yet."""
    raise CfgrlError("train is not implemented yet")
