import json
import shutil

from helpers import compose_job

from detox.core.cache import StageCache
from detox.data.parts import text_field
from detox.data.world import WorldConfig, build_world
from detox.job import JobConfig
from detox.pipeline import run_job


def test_stages_share_outputs_across_jobs(tmp_path):
    cache = StageCache(tmp_path / "cache")
    first = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "ratio=10")), cache, log=lambda _: None)
    assert not any(first.cache_hits.values())
    other_eval = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "ratio=10", "evaluate.rtp_samples=3")),
                         cache, log=lambda _: None)
    assert other_eval.cache_hits == {"sources": True, "tokenizer": True, "mixture": True, "pretrain": True,
                                     "evaluate": False}
    other_ratio = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "ratio=5")), cache, log=lambda _: None)
    assert other_ratio.cache_hits == {"sources": True, "tokenizer": True, "mixture": False, "pretrain": False,
                                      "evaluate": False}
    assert other_ratio.metrics["mix_clean_tokens"] == first.metrics["mix_clean_tokens"]


def test_local_files_with_a_classifier_run_end_to_end(tmp_path, classifier_dir):  # noqa: F811
    build_world(WorldConfig(clean_docs=200, toxic_docs=120, heldout_docs=10, toxigen_prompts=6, rtp_prompts=3),
                tmp_path / "world")
    (tmp_path / "files").mkdir()
    for part in ("clean", "toxic", "heldout", "toxigen", "rtp"):  # plain text, no labels, as real data comes
        field = text_field(part)
        rows = [json.loads(line)[field] for line in open(tmp_path / "world" / f"{part}.jsonl")]
        (tmp_path / "files" / f"{part}.jsonl").write_text("".join(json.dumps({field: r}) + "\n" for r in rows))
    files = [f"data.files.{part}={tmp_path / 'files' / part}.jsonl" for part in ("clean", "toxic", "heldout", "toxigen", "rtp")]
    job = JobConfig.from_dict(compose_job("experiment=smoke", "data=files", *files, "scorer=classifier",
                                          f"scorer.model={classifier_dir}", "scorer.toxic_label=toxic", "scorer.activation=softmax", "ratio=20"))
    result = run_job(job, StageCache(tmp_path / "cache"), log=lambda _: None)
    m = result.metrics
    assert 0 <= m["toxigen"] <= 100 and m["ce_loss"] > 0 and abs(m["mix_realised_ratio"] - 20) < 3
    assert "implied_toxigen" not in m  # only the synthetic world knows what its data implies
    # the sources are keyed by content: an edited file is a new source, not a stale cache hit
    shutil.copy(tmp_path / "files" / "heldout.jsonl", tmp_path / "files" / "clean.jsonl")
    edited = JobConfig.from_dict(compose_job("experiment=smoke", "data=files", *files, "scorer=classifier",
                                             f"scorer.model={classifier_dir}", "scorer.toxic_label=toxic", "scorer.activation=softmax", "ratio=20", "data.clean_tokens=300"))
    assert run_job(edited, StageCache(tmp_path / "cache"), log=lambda _: None).cache_hits["sources"] is False


def test_method_stages_share_the_base_model_and_change_what_is_evaluated(tmp_path):
    """prompting prepends its text to every evaluated prompt; sft evaluates its own model; meda
    pre-trains on annotated documents; none of them re-trains the base model of method=none."""
    cache, quiet = StageCache(tmp_path / "cache"), (lambda _: None)
    base = run_job(JobConfig.from_dict(compose_job("experiment=smoke")), cache, quiet)
    prompted = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "method=prompting",
                                                       "method.text=be civil . ")), cache, quiet)
    assert prompted.cache_hits["pretrain"]
    rows = [json.loads(line) for line in open(prompted.artifacts["evaluate"].path / "generations.jsonl")]
    assert rows and all(row["prompt"].startswith("be civil .") for row in rows)
    tuned = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "method=sft", "method.steps=3",
                                                    "method.batch_size=4")), cache, quiet)
    assert tuned.cache_hits["pretrain"] and not tuned.cache_hits["sft"]
    assert tuned.metrics["sft_final_loss"] < tuned.metrics["sft_initial_loss"]
    preferred = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "method=dpo", "method.steps=3",
                                                        "method.batch_size=4", "method.lr=0.01")), cache, quiet)
    assert preferred.cache_hits["pretrain"] and preferred.metrics["dpo_pairs"] == 500
    assert preferred.metrics["dpo_final_reward_margin"] > preferred.metrics["dpo_initial_reward_margin"]
    world_prompted = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "method=prompting")), cache, quiet)
    rows = [json.loads(line) for line in open(world_prompted.artifacts["evaluate"].path / "generations.jsonl")]
    assert all(row["prompt"].startswith("we keep it kind . ") for row in rows)  # the world's own preamble
    annotated = run_job(JobConfig.from_dict(compose_job("experiment=smoke", "method=meda")), cache, quiet)
    assert not annotated.cache_hits["pretrain"]  # its own base model, on the annotated mixture
    assert annotated.artifacts["pretrain"].key != base.artifacts["pretrain"].key
    assert annotated.cache_hits["tokenizer"] and not annotated.cache_hits["mixture"]
    # every packed document opens with the annotation of its own (oracle) score
    from detox.core.shards import open_mixture
    from detox.core.tokens import EOS, load_tokenizer
    from detox.data.world import oracle_toxicity

    tokenizer = load_tokenizer(annotated.artifacts["tokenizer"].path)
    tokens = open_mixture(annotated.artifacts["mixture"].path)[:].tolist()
    ends = [i for i, t in enumerate(tokens) if t == tokenizer.token_to_id(EOS)]
    documents = [tokenizer.decode(tokens[a + 1:b]) for a, b in zip([-1] + ends, ends)]
    assert len(documents) == annotated.metrics["mix_clean_docs"] + annotated.metrics["mix_toxic_docs"]
    for document in documents:
        text = document.split("\n", 1)[1]
        assert document.startswith(f"toxicity: {oracle_toxicity(text):.1f}\n")
    # the share of the mixture's clean documents scored toxic; ratio 0 takes no toxic document to share
    assert 0 <= annotated.metrics["annotated_clean_toxic_share"] < 0.5
    assert "annotated_toxic_toxic_share" not in annotated.metrics
    rows = [json.loads(line) for line in open(annotated.artifacts["evaluate"].path / "generations.jsonl")]
    assert all(row["prompt"].startswith("toxicity: 0.0\n") for row in rows)
