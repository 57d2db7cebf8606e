"""``python -m cfgrl``: the same command line as the ``cfgrl`` script, where the script is not on PATH.

It runs ``cfgrl.cli`` as ``python -m cfgrl.cli`` would (the form torchrun uses) rather than importing it:
``cfgrl/cli.py`` is the one module above every stage (tests/test_layering.py).
"""

import runpy

runpy.run_module("cfgrl.cli", run_name="__main__")
