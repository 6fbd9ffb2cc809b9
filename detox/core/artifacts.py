"""The names the stages share, in one place: the study's stages, and the files they write that later
stages (or MLflow) read. A method's own stages (probe, steer, sft, dpo) are named in its module."""


class STAGE:
    """The study's stages, in order: each one's cache folder, the name other stages read it by, and its
    `cache.<name>` tag in MLflow."""

    SOURCES = "sources"  # the source kind's parts: evaluation prompts, held-out text, small training parts
    TOKENIZER = "tokenizer"
    PREPARE = "prepare"  # data.source=corpora: the training corpora tokenised once (detox.data.store)
    MIXTURE = "mixture"  # the packed (ratio, seed) mixture
    PRETRAIN = "pretrain"  # the base model (its key is the job's `base_model` param)
    EVALUATE = "evaluate"
    REDTEAM = "redteam"
    TAMPER = "tamper"  # the fine-tuning attack after the evaluation (the `tamper` group)
    CAPABILITY_BASE = "capability_base"  # lm-eval tasks on the base model (shared by every treatment of it)
    CAPABILITY = "capability"  # the same tasks on the treated model (its intervention active)


METRICS = "metrics.json"  # every stage: the metrics it reports, logged to MLflow
SPEC = "spec.json"  # every stage: the spec its key was made from
HF_MODEL = "hf"  # pretrain and post-training: the model as transformers' OlmoForCausalLM + tokenizer
LOSS_CURVE = "loss_curve.json"  # pretrain: [[step, loss], ...], the loss averaged over each global batch
HISTORIES = "histories.json"  # pretrain: {"pretrain_lr" | "pretrain_tokens_per_s" | "pretrain_mfu": [[step, value], ...]}
GENERATIONS = "generations.jsonl"  # evaluate: prompts, continuations and their scores
TOKENIZER = "tokenizer.json"  # tokenizer stage
