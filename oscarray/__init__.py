"""oscarray: a bit-exact digital emulator of oscillator-based attention hardware."""
__version__ = "0.1.0"
