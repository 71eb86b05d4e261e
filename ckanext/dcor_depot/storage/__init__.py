"""Storage layer: where the files of DCOR live (S3 object store, later the depot)."""
