"""Geometry: 3DMM pose, projection and crops (`transforms`), triangle rasterisation
(`render`) and rigid point-cloud alignment (`icp`). Pure functions over arrays; depends only on
`prnet_jax.native` (the optional CPU rasteriser)."""
