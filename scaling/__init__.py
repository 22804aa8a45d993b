"""Scaling-law harness for structured linear layers: build, train, launch."""

from scaling.process import default_omp_wait

default_omp_wait()  # before anything imports torch (scaling/process.py)
