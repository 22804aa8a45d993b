"""Search the structure space for the most compute-efficient structure at a budget (`python -m analysis.search`)."""
