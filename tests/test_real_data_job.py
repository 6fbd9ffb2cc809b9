"""data=paper end to end on local files in the published formats, written here: C4-like JSON lines,
4chan /pol/ threads (zstd-compressed ndjson, HTML posts), ToxiGen's prompt files, RealToxicityPrompts'
prompts.jsonl; OLMo's own tokenizer, memory-mapped shards, a classifier scorer."""

import html
import json

import numpy as np
import zstandard
from helpers import compose_job, toxigen_line

from detox.core.cache import StageCache
from detox.core.shards import ShardedTokens
from detox.job import JobConfig
from detox.pipeline import run_job


def write_corpora(world_data, root):
    world = world_data[1] / "sources"
    rows = lambda part, field: [json.loads(line)[field] for line in open(world / f"{part}.jsonl")]  # noqa: E731
    (root / "c4.jsonl").write_text("".join(json.dumps({"text": t, "url": "x"}) + "\n" for t in rows("clean", "text")))
    (root / "owt.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows("heldout", "text")))
    toxic = rows("toxic", "text")
    threads = [{"posts": [{"no": 10 * i + j, "com": html.escape(text).replace(" . ", " .<br>"),
                           "perspectives": {"TOXICITY": 0.8}} for j, text in enumerate(toxic[i:i + 3])]}
               for i in range(0, len(toxic), 3)]
    (root / "pol.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(t) + "\n" for t in threads).encode()))
    (root / "prompts").mkdir()
    for group in ("valoki", "sennar"):
        lines = [toxigen_line([f"the {group} are here", f"i am weary of the {group} {i}"]) for i in range(4)]
        (root / "prompts" / f"hate_{group}_1k.txt").write_text("\n".join(lines) + "\n")
    (root / "rtp.jsonl").write_text("".join(json.dumps(
        {"filename": f"{i}.txt", "begin": 0, "end": 10, "challenging": i % 2 == 0,
         "prompt": {"text": f"we read the books {i}", "toxicity": 0.1},
         "continuation": {"text": " .", "toxicity": 0.0}}) + "\n" for i in range(6)))


def test_paper_data_runs_end_to_end_with_shards(world_data, classifier_dir, tmp_path):  # noqa: F811
    write_corpora(world_data, tmp_path)
    overrides = ["experiment=smoke", "data=paper", "data.clean_tokens=8000", "data.seq_len=32", "ratio=10",
                 f"data.corpora.clean.path={tmp_path / 'c4.jsonl'}", f"data.corpora.toxic.path={tmp_path / 'pol.ndjson.zst'}",
                 f"data.corpora.heldout.path={tmp_path / 'owt.jsonl'}", "data.corpora.heldout_docs=8",
                 f"data.corpora.toxigen={tmp_path / 'prompts'}", "data.corpora.toxigen_groups=[valoki,sennar]",
                 "data.corpora.toxigen_per_group=3",
                 f"data.corpora.rtp={tmp_path / 'rtp.jsonl'}", "data.corpora.rtp_prompts=4",
                 "scorer=classifier", f"scorer.model={classifier_dir}", "scorer.toxic_label=toxic", "scorer.activation=softmax", "scorer.toxic_label=toxic", "scorer.activation=softmax"]
    result = run_job(JobConfig.from_dict(compose_job(*overrides)), StageCache(tmp_path / "cache"), log=lambda _: None)
    m = result.metrics
    assert m["vocab_size"] == 50280  # OLMo's tokenizer
    shards = ShardedTokens(result.artifacts["mixture"].path)
    assert shards.total_tokens == m["mix_total_tokens"] and abs(m["mix_realised_ratio"] - 10) < 0.5
    assert m["mix_clean_tokens"] >= 8000 and m["pretrain_steps"] > 0 and m["ce_loss"] > 0
    assert {"toxigen_group_valoki", "toxigen_group_sennar"} <= set(m)  # ToxiGen reported per target group
    rows = [json.loads(line) for line in open(result.artifacts["evaluate"].path / "generations.jsonl")]
    toxigen = [r["prompt"] for r in rows if r["set"] == "toxigen"]
    assert len(toxigen) == 6 and all(p.startswith("- the ") and p.endswith("\n-") for p in toxigen)
    assert np.isin(["we read the books"], [r["prompt"][:17] for r in rows if r["set"] == "rtp"]).all()


def test_paper_data_needs_its_corpora():
    import pytest

    from detox.core.schema import ConfigError

    with pytest.raises(ConfigError, match="data.corpora.toxic.path"):
        JobConfig.from_dict(compose_job("data=paper"))


def paper_overrides(root):
    return ["experiment=smoke", "data=paper", "data.seq_len=32", f"data.corpora.clean.path={root / 'c4.jsonl'}",
            f"data.corpora.toxic.path={root / 'pol.ndjson.zst'}", f"data.corpora.heldout.path={root / 'owt.jsonl'}",
            f"data.corpora.toxigen={root / 'prompts'}", "data.corpora.toxigen_groups=[valoki,sennar]",
            "data.corpora.toxigen_per_group=3", f"data.corpora.rtp={root / 'rtp.jsonl'}", "data.corpora.rtp_prompts=4",
            "data.corpora.heldout_docs=8"]  # data=paper's default classifier: the config never loads it


def test_dpo_and_iti_on_real_data_need_their_files_before_any_stage(world_data, tmp_path):
    """With data=paper, method=dpo without data.corpora.preference and method=iti without (or with a bad)
    data.corpora.probe stop at the config, naming the input; good files pass."""
    import pytest

    from detox.core.schema import ConfigError

    write_corpora(world_data, tmp_path)
    paper = paper_overrides(tmp_path)
    with pytest.raises(ConfigError, match=r"method=dpo needs data.corpora.preference: \{\"prompt\""):
        JobConfig.from_dict(compose_job(*paper, "method=dpo"))
    with pytest.raises(ConfigError, match="method=iti needs data.corpora.probe: labelled texts"):
        JobConfig.from_dict(compose_job(*paper, "method=iti"))
    cases = {  # file contents -> the error
        "preference": [('{"prompt": "p", "chosen": " fine"}\n', r"pair 1 lacks a non-empty string 'rejected'"),
                       ("", "empty file"), ('{"prompt": "p", "chosen": " a", "rejected": " b"}\n{oops\n', ":2: malformed JSON")],
        "probe": [('{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n', "probing needs both classes"),
                  ('{"text": "a", "label": "toxic"}\n', "probe text 1 has label 'toxic'")],
    }
    for part, files in cases.items():
        method = {"preference": "dpo", "probe": "iti"}[part]
        for number, (content, error) in enumerate(files):
            path = tmp_path / f"{part}{number}.jsonl"
            path.write_text(content)
            with pytest.raises(ConfigError, match=error):
                JobConfig.from_dict(compose_job(*paper, f"method={method}", f"data.corpora.{part}={path}"))
    with pytest.raises(ConfigError, match="data.corpora.preference=.*no such file"):
        JobConfig.from_dict(compose_job(*paper, "method=dpo", f"data.corpora.preference={tmp_path / 'none.jsonl'}"))
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"prompt": "the valoki are", "chosen": " here today.", "rejected": " vile."}\n')
    JobConfig.from_dict(compose_job(*paper, "method=dpo", f"data.corpora.preference={good}"))


def test_meda_and_inst_annotate_the_streamed_corpora_in_the_shards(world_data, classifier_dir, tmp_path):
    """MEDA's mixture of C4 and /pol/ (data=paper): every document in the shards opens with its
    annotation made from the job's classifier's score, which the scorer's cache under the root keeps by
    text; a /pol/ post's too, not from the Perspective score its corpus ships (0.8 here: another scale)."""

    from tokenizers import Tokenizer

    from detox.core.artifacts import STAGE, TOKENIZER
    from detox.core.plan import Plan
    from detox.data.annotate import prefix
    from detox.evaluation.scorers import bulk_scorer
    from detox.pipeline import run_plan, study_plan

    write_corpora(world_data, tmp_path)
    c4 = {json.loads(line)["text"] for line in open(tmp_path / "c4.jsonl")}
    for scheme in ("meda", "inst"):
        job = JobConfig.from_dict(compose_job(*paper_overrides(tmp_path), f"scorer.model={classifier_dir}", "scorer.toxic_label=toxic", "scorer.activation=softmax",
                                              f"method={scheme}", "data.clean_tokens=1500", "ratio=20",
                                              f"root={tmp_path / 'root'}"))
        plan = study_plan(job)
        result = run_plan(Plan([plan[name] for name in (STAGE.SOURCES, STAGE.TOKENIZER, STAGE.MIXTURE)]),
                          StageCache(tmp_path / "root" / "cache"), log=lambda _: None)
        shards = ShardedTokens(result.artifacts[STAGE.MIXTURE].path)
        tokenizer = Tokenizer.from_file(str(result.artifacts[STAGE.TOKENIZER].path / TOKENIZER))
        tokens = shards.window(0, shards.total_tokens)
        ends = np.flatnonzero(tokens == shards.eos_id)
        documents = [tokenizer.decode(part.tolist()) for part in np.split(tokens, ends + 1)[:-1]]
        score = bulk_scorer(job.scorer, job.root)  # the cached scores the mixture used
        posts = 0
        for document in documents:
            annotation, text = document.split("\n", 1)
            assert annotation + "\n" == prefix(float(score([text])[0]), scheme), document
            posts += text not in c4
        m = result.metrics
        assert posts == m["mix_toxic_docs"] > 0 and len(documents) == m["mix_clean_docs"] + m["mix_toxic_docs"]
        assert m["classifier_truncated"] == 0 and 0 <= m["annotated_toxic_toxic_share"] <= 1


def test_sft_takes_the_first_non_toxic_documents_of_the_clean_stream(tmp_path):
    """SFT's documents with data=paper: C4 streamed in order, scored in batches until max_docs score
    below the threshold, the stream read no further; every document scored by the job's scorer, one that
    carries its corpus's own score too, and one the scorer could not score (NaN) left out."""
    import gzip

    from detox.data.corpora import SourceSpec
    from detox.data.documents import Document
    from detox.data.revisions import Reread
    from detox.methods.sft import non_toxic_documents

    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(path, "wt") as file:
        file.writelines(json.dumps({"text": f"{'rude' if i % 3 == 0 else 'kind'} document {i}", "url": "u"}) + "\n"
                        for i in range(100))
    asked = []

    def scorer(texts):
        asked.extend(texts)
        return np.array([0.9 if "rude" in t else 0.1 for t in texts])

    taken, read = non_toxic_documents(Reread(SourceSpec(str(path))), scorer, 0.5, max_docs=6, batch_size=4)
    assert [row["text"] for row in taken] == [f"kind document {i}" for i in (1, 2, 4, 5, 7, 8)]
    assert all(row["toxicity"] == 0.1 for row in taken) and read == 9 and len(asked) == 12  # 3 batches of 4
    own = [Document("rude post its corpus scored 0.2", toxicity=0.2), Document("kind", toxicity=0.7), "kind too"]
    assert non_toxic_documents(own, scorer, 0.5, 5, 2) == ([{"text": "kind", "toxicity": 0.1},
                                                            {"text": "kind too", "toxicity": 0.1}], 3)
    missing = lambda texts: np.array([np.nan if "lost" in t else 0.1 for t in texts])  # noqa: E731
    assert non_toxic_documents(["lost", "kind"], missing, 0.5, 5, 2) == ([{"text": "kind", "toxicity": 0.1}], 2)
