"""data=paper end to end on local files in the published formats, written here: C4-like JSON lines,
4chan /pol/ threads (zstd-compressed ndjson, HTML posts), ToxiGen's prompt files, RealToxicityPrompts'
prompts.jsonl; OLMo's own tokenizer, memory-mapped shards, a classifier scorer."""

import html
import json

import numpy as np
import zstandard

from helpers import compose_job
from detox.core.cache import StageCache
from detox.config import JobConfig
from detox.pipeline import run_job
from detox.core.shards import ShardedTokens
from helpers import toxigen_line


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
                 f"data.corpora.toxigen={tmp_path / 'prompts'}", "data.corpora.toxigen_per_group=3",
                 f"data.corpora.rtp={tmp_path / 'rtp.jsonl'}", "data.corpora.rtp_prompts=4",
                 "scorer=classifier", f"scorer.model={classifier_dir}"]
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

    from detox.config import ConfigError

    with pytest.raises(ConfigError, match="data.corpora.toxic.path"):
        JobConfig.from_dict(compose_job("data=paper", "scorer=classifier", "scorer.model=/x"))
