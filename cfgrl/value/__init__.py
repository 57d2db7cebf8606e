"""The value stage (RECAP): a distributional value model trained on stores, cross-fitted, that writes
V for every stored frame, so that `cfgrl label -o cfgrl.label_source=value --value DIR` labels windows
by an N-step advantage without reading an image.

* ``targets``  RECAP's rewards and normalised, clipped returns-to-go (numpy)
* ``output``   the output directory: reading it, and matching it to a store (numpy, pandas)
* ``model``    the network and its HL-Gauss loss (torch)
* ``fit``      loading frames, the two folds, training, writing the output (torch)
"""
