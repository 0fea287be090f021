"""Training: training sets, out-of-fold calibration, runs, sweeps, selection, box and site training."""
