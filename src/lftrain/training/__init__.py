"""The one training loop and what it needs: optimisers, schedules, precision, checkpoints, run directories."""
