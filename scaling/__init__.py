"""Scaling-law harness for structured linear layers: build, train, launch."""
