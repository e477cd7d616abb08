"""Data: the HDF5 and analytic sources, stateless batches and prefetch (`sources`), and
the writer of the reference data set (`writer`)."""
