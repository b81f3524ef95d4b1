"""Training: the sharded, jitted train loop (`train`), the training-run checkpoints
(`checkpointer`) and the packaging of a run as the bundled model (`pretrained`)."""
