"""instseg: image and video instance segmentation (BCNet, CPMask, PCAN, VOIN)."""

__version__ = "0.1.0"
