"""Loading base models offline and safely, adaptation (which parameters train), fast kernels."""
