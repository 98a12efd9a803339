"""The shared training engine: run context, factories, collection, checkpoints, metrics, optimizers,
evaluation, SFT and the policy update."""
