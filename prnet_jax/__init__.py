"""prnet_jax: PRNet (Feng et al., ECCV 2018) in JAX/Flax.

Importing the package changes nothing in the process; the optional XLA:CPU settings are in
`prnet_jax.runtime` (``launch.py`` applies them).
"""
