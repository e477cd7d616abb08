"""The run machinery: config checks and setup, the pure train/eval steps, the trainer
loop, the run directory (lock, resume checks) and reporting."""
