"""Data: the HDF5 and analytic sources (`sources`), stateless batches and prefetch (`loader`), and
the writer of the reference data set (`writer`)."""
