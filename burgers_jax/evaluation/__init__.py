"""Evaluation and prediction as library functions (the commands `burgers-evaluate` and
`burgers-predict` are thin layers over them)."""
