"""Probing and steering: per-head probes of the attention outputs (probe: the stage; probe_fit: the
logistic probes; plots: their heat map) and inference-time intervention on the best heads (steer)."""
