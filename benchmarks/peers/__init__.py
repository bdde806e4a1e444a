"""Hand-written peers of trialkit's screening, for the benchmarks to compare against (never imported by trialkit)."""
