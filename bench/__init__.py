"""Benchmarks of the client against baselines measured in the same run (`make bench`)."""
