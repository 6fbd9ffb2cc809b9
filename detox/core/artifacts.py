"""Names of the files and folders that stages write and later stages (or MLflow) read, in one place."""

METRICS = "metrics.json"  # every stage: the metrics it reports, logged to MLflow
SPEC = "spec.json"  # every stage: the spec its key was made from
HF_MODEL = "hf"  # pretrain and post-training: the model as transformers' OlmoForCausalLM + tokenizer
LOSS_CURVE = "loss_curve.json"  # pretrain: [[step, loss], ...], the loss averaged over each global batch
HISTORIES = "histories.json"  # pretrain: {"pretrain_lr" | "pretrain_tokens_per_s" | "pretrain_mfu": [[step, value], ...]}
GENERATIONS = "generations.jsonl"  # evaluate: prompts, continuations and their scores
TOKENIZER = "tokenizer.json"  # tokenizer stage
MIXTURE = "train.npy"  # mixture stage: the packed token stream
