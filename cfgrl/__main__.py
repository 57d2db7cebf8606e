"""``python -m cfgrl``: the same command line as the ``cfgrl`` script (useful where the script is not on PATH)."""

from cfgrl.cli import app

if __name__ == "__main__":
    app(prog_name="cfgrl")
