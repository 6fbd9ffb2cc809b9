"""Training stages: pre-training OLMo through Lightning (pretrain) and post-training it (posttrain:
SFT and DPO), with the optimiser and schedule they share (optim)."""
