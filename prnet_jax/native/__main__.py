"""``python -m prnet_jax.native``: build the native kernels, check them against XLA, report."""

from prnet_jax.native import main

main()
