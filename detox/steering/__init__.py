"""Probing and steering: per-head probes of the attention outputs (probe) and inference-time
intervention on the best heads (steer)."""
