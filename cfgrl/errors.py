"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class CfgrlError(Exception):
    """Bad input or a broken artefact: the message says what is wrong and what is accepted."""
