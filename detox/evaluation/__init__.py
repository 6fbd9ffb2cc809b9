"""Evaluation stages: generations on the prompt sets scored for toxicity and CE loss (evaluate), the
scorers, the Perspective API client and GCG red-teaming (redteam)."""
