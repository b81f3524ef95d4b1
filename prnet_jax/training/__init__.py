"""Training: the checks of a run's config (`config_checks`), the sharded, jitted train loop
(`train`), the training-run checkpoints (`checkpointer`) and the packaging of a run as the
bundled model (`pretrained`)."""
