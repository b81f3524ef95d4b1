"""The network and what trains it: the PRNet encoder-decoder (`model`) on its convolutions
(`conv_ops`) and BatchNorm (`batchnorm`), the weighted loss (`losses`), the device mesh and
sharding rules (`sharding`), and model-variable checkpoints (`checkpoints`: what serving loads
without importing training)."""
