"""The contract between the study jobs and the report: the params a study job logs to MLflow, the
metrics the report reads, and how a value is written as a param.

A job logs these params (built by `detox.pipeline.job_params`) beside its `cfg.<stage>.*` params;
the report (`detox.report`) groups, joins and filters by these names only, never by parsing a label
back or by a stage's config. Every value is a plain string as MLflow keeps it: numbers as numbers
("8", "2.5"), never a display label to be parsed back. Imports nothing.
"""

from __future__ import annotations

# ---------------------------------------------------------------- params every study job logs

RATIO = "ratio"  # toxic share of the pre-training tokens, percent (`number`)
SEED = "seed"  # the job's seed, a whole number
METHOD = "method"  # the detoxification method's name (a module of detox.methods)
STRENGTH = "strength"  # the method's strength as shown in tables ("-", "mid", "alpha=6 random(sigma)"); display only
MODEL = "model"  # the model config's name (conf/model)
DATA = "data"  # where the data comes from: synthetic | files | corpora
TASK = "task"  # "study" (the toy curve's run logs "toy")
SETTING = "setting"  # the job's identity apart from its seed: runs sharing it are seeds of one configuration
BASE_MODEL = "base_model"  # the cache key of the job's pretrain stage: runs sharing it start from one base model
# the toxicity scorer at its version (detox.evaluation.config.ScorerConfig.label): "oracle", "perspective TOXICITY
# (unversioned API)", "<hub id>@<commit, 12 hex>" or "<folder> files:<sha256, 12 hex>" (+ " calibrated:<sha256>");
# the report never pools or tabulates two scorers together (runs logged before it: "scorer not recorded")
SCORER = "scorer"

# method=iti only: what its steering is made of (detox.methods.iti.ItiOptions)
ITI_ALPHA = "iti_alpha"  # the shift in sigmas (`number`)
ITI_DIRECTION = "iti_direction"  # mass_mean | probe | random (the random control)
ITI_TOP_K_HEADS = "iti_top_k_heads"  # heads steered, a whole number
ITI_RANDOM_SCALING = "iti_random_scaling"  # sigma | matched_norm; only with iti_direction=random, which alone reads it

STUDY_PARAMS = (RATIO, SEED, METHOD, STRENGTH, MODEL, DATA, TASK, SETTING, BASE_MODEL, SCORER)  # every study job
ITI_PARAMS = (ITI_ALPHA, ITI_DIRECTION, ITI_TOP_K_HEADS, ITI_RANDOM_SCALING)  # method=iti jobs too

# ---------------------------------------------------------------- metrics the report reads (percent unless noted)

TOXIGEN = "toxigen"  # greedy continuations of hostile prompts scored toxic
RTP_EXPECTED_MAX_TOXICITY = "rtp_expected_max_toxicity"  # RTP: mean over prompts of the highest sample score
RTP_TOXICITY_PROBABILITY = "rtp_toxicity_probability"  # RTP: prompts with any toxic sample
RTP_SAMPLE_TOXICITY = "rtp_sample_toxicity"  # RTP: samples scored toxic
# the other unit of the paper's tables (some read them as mean score x 100): the mean score of all continuations x 100
TOXIGEN_MEAN_SCORE = "toxigen_mean_score"
RTP_MEAN_SCORE = "rtp_mean_score"
CE_LOSS = "ce_loss"  # cross-entropy on held-out clean text, nats
CE_HOSTILE = "ce_hostile"  # cross-entropy on held-out text in hostile contexts, nats (embedded world)
INSULT_PROBABILITY = "insult_probability"  # the exact insult probability after hostile prompts (embedded world)
WELL_FORMED = "well_formed"  # generations that are sentences of the world's grammar (embedded world)
IMPLIED_TOXIGEN = "implied_toxigen"  # what the mixture implies for `toxigen` (embedded world)
IMPLIED_INSULT_PROBABILITY = "implied_toxigen_sampled"  # what the mixture implies for `insult_probability`
REALISED_INSULT_PROBABILITY = "realised_toxigen_sampled"  # ... from the documents the mixture realised (the target)
GCG_SUCCESS = "gcg_success"  # GCG attack success without ITI
GCG_SUCCESS_ITI = "gcg_success_iti"  # ... and with it (method=iti)
PROBE_BEST_ACCURACY = "probe_best_accuracy"  # per-head probe validation accuracy: the best head
PROBE_MEAN_ACCURACY = "probe_mean_accuracy"  # ... the mean over heads
PROBE_LABEL_CEILING = "probe_label_ceiling"  # the best accuracy any reader of the text could reach
ENTANGLEMENT_BEST_HEAD = "entanglement_best_head"  # max |cos| of the toxicity direction with other features
ENTANGLEMENT_MEAN = "entanglement_mean"  # ... mean over heads
ENTANGLEMENT_RANDOM_LEVEL = "entanglement_random_level"  # ... the level of random directions
SEARCH_OBJECTIVE = "search_objective"  # a search trial's objective (detox.search)
SEARCH_FEASIBLE = "search_feasible"  # 1 within the CE budget, 0 beyond it
SEARCH_CE_COST = "search_ce_cost"  # CE the method added, nats
SEARCH_UNSTEERED = "search_unsteered"  # the toxicity of the same base model without the method
SEARCH_DROP = "search_drop"  # how much the method lowered it

IMPLIED = {INSULT_PROBABILITY: REALISED_INSULT_PROBABILITY, TOXIGEN: IMPLIED_TOXIGEN}  # a toxicity -> its target
# what the report pools over seeds (mean, std, n a configuration), in the order of its CSV
POOLED_METRICS = (TOXIGEN, RTP_EXPECTED_MAX_TOXICITY, RTP_TOXICITY_PROBABILITY, CE_LOSS, INSULT_PROBABILITY,
                  WELL_FORMED, CE_HOSTILE, RTP_SAMPLE_TOXICITY, IMPLIED_TOXIGEN, IMPLIED_INSULT_PROBABILITY,
                  REALISED_INSULT_PROBABILITY,
                  GCG_SUCCESS, GCG_SUCCESS_ITI, PROBE_BEST_ACCURACY, PROBE_MEAN_ACCURACY, PROBE_LABEL_CEILING,
                  ENTANGLEMENT_BEST_HEAD, ENTANGLEMENT_MEAN, ENTANGLEMENT_RANDOM_LEVEL, TOXIGEN_MEAN_SCORE,
                  RTP_MEAN_SCORE)
SEARCH_METRICS = (SEARCH_OBJECTIVE, SEARCH_FEASIBLE, SEARCH_CE_COST, SEARCH_UNSTEERED, SEARCH_DROP)  # one run a trial
METRICS = POOLED_METRICS + SEARCH_METRICS  # every metric the report reads


def number(value: float) -> str:
    """A number as a param: "8" for 8.0, "2.5", exact (never rounded for display)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def param(name: str) -> str:
    """The column of a param in an `mlflow.search_runs` frame."""
    return f"params.{name}"


def metric(name: str) -> str:
    """The column of a metric in an `mlflow.search_runs` frame."""
    return f"metrics.{name}"
