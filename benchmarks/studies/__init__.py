"""One-off studies: the measurements behind one decision each (see ../README.md). Run as
`python -m benchmarks.studies.NAME` from the repository root."""
