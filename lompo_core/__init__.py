"""lompo: offline reinforcement learning from camera images for real robot arms."""

__version__ = "0.1.0"
