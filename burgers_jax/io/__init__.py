"""What touches the disk or the terminal: checkpoint formats, safe outputs, progress
bars, the compilation cache."""
