"""Imported first by every entry point (the CLIs and the submitit job): idle OpenMP threads sleep, not spin.

OMP_WAIT_POLICY=PASSIVE unless the environment chose otherwise (why: scaling/process.py). OpenMP reads it once,
when torch starts, so an entry point imports this before anything imports torch. Importing the `scaling` package
itself sets nothing; a library user who wants the setting imports this module first.
"""

from scaling.process import default_omp_wait

default_omp_wait()
