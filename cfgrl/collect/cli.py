"""`cfgrl collect` and `cfgrl inspect` (being written)."""
from cfgrl.errors import CfgrlError


def collect_command() -> None:
    """Roll out a policy and append whole episodes to a Zarr store."""
    raise CfgrlError("collect is not implemented yet")


def inspect_command() -> None:
    """Summarise a store."""
    raise CfgrlError("inspect is not implemented yet")
