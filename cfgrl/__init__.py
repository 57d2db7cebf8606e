"""cfgrl: Classifier-Free-Guidance RL post-training for PI0 policies."""

__version__ = "0.1.0"
