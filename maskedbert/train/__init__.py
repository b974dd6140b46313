"""Training engine: Trainer loop, optimizer, schedules, checkpoints."""
