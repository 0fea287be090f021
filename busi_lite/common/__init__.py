"""Plumbing every layer may use: errors, atomic writes, strict JSON, packaged files, BLAS threads,
the paper's reference numbers and shared constants. Imports nothing else of busi_lite."""
