"""dymsta: DyMSTA-Net video action classification toolkit."""

__version__ = "0.1.0"
