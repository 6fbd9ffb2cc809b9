"""Plan mode's cost model (detox/costs.py) as a user meets it: `python launch.py ... plan=true` in a subprocess
on small files in the paper's formats prints the cost table, and refuses in one line, exit 2, before any stage,
what cannot finish: an evaluation over the device's memory, a toxic corpus short for the ratio, a stage longer
than the SLURM launcher's time limit with nothing saved in it."""

import pytest
from helpers import compose_job, launch, paper_overrides, write_paper_inputs

from detox.core.artifacts import STAGE
from detox.job import JobConfig

# one job of the paper-scale preset under phase 1's launcher (timeout_min 720)
PAPER = ("experiment=paper_olmo1b", "ratio=25", "hydra/launcher=slurm")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return paper_overrides(write_paper_inputs(tmp_path_factory.mktemp("data")))


def plan(root, data, *overrides):
    return launch(*PAPER, f"root={root}", *data, *overrides, "plan=true")


def assert_refused(result, root, *words):
    """One line on stderr naming the culprit, exit 2, nothing planned and nothing written."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: ") and all(w in lines[0] for w in words), lines
    assert "plan=true:" not in result.stdout
    return lines[0]


def test_the_cost_table_of_a_paper_scale_job(tmp_path, data):
    result = plan(tmp_path / "root", data)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 20.1 B clean + 6.7 B toxic tokens tokenised once, 2 bytes a token, at 8 x 300 k tokens/s
    assert "prepare   1 x, 26.8 B tokens, 54 GB disk, 3.1 h on 8 CPUs" in out
    # 26.8 B tokens seen at 35 k tokens/s on each of 16 GPUs; a checkpoint of fp32 weights and AdamW
    assert "pretrain  1 x, 26.8 B tokens, 15 GB disk, 13.3 h on 16 GPUs each job, 213 GPU-hours" in out
    # 214 x 14 ToxiGen prompts + 3,000 RTP prompts x 25 samples, by the open classifier at 200 k tokens/s on one GPU
    assert "evaluate  1 x, 77,996 scorer calls, 9 s at the scorer's rate, largest evaluation tensor" in out
    assert "of 80 GB device memory" in out
    assert "toxic budget: ratio 25 needs 6.70 B toxic tokens; the toxic corpus is not counted yet" in out
    assert not (tmp_path / "root").exists()


def test_an_evaluation_over_the_device_memory_is_refused(tmp_path, data):
    line = assert_refused(plan(tmp_path / "root", data, "device_memory_gb=8"), tmp_path / "root",
                          "evaluation of ratio 25 seed 1", "device_memory_gb=8", "evaluate.batch_size")
    assert "MLP activations of a batch take 8.6 GB" in line  # 64 x 2,048 tokens x 8,192 x 4 bytes
    assert plan(tmp_path / "root", data, "device_memory_gb=8", "evaluate.batch_size=16").returncode == 0


@pytest.mark.slow  # three plans of the paper's preset in subprocesses, about 30 s
def test_a_toxic_corpus_short_for_the_ratio_is_refused(tmp_path, data):
    """The prepared toxic store (its index read, not the corpus) holds a few hundred tokens; ratio 25 of 1 M
    clean tokens needs 333,333."""
    from detox.core.tokens import olmo_tokenizer
    from detox.data.store import prepare_store
    from detox.jobs import plan_job

    root, small = tmp_path / "root", ("data.clean_tokens=1000000",)
    job = JobConfig.from_dict(compose_job(*PAPER[:2], f"root={root}", *data, *small))
    key = next(s.key for s in plan_job("", job).stages if s.name == STAGE.PREPARE)
    store = root / "cache" / STAGE.PREPARE / key / "toxic"
    prepare_store([f"toxic post {i}" for i in range(50)], olmo_tokenizer(), store)
    line = assert_refused(plan(root, data, *small), root, "ratio 25 needs 333,333 toxic tokens",
                          "data.corpora.toxic", "on_short=repeat")
    assert "holds 200" in line  # 50 posts of 3 tokens and EOS
    assert sorted(p.name for p in (root / "cache").iterdir()) == [STAGE.PREPARE]  # no stage started
    assert plan(root, data, *small, "data.corpora.on_short=repeat").returncode == 0


@pytest.mark.slow  # three plans of the paper's preset in subprocesses, about 30 s
def test_a_stage_longer_than_the_time_limit_with_nothing_saved_is_refused(tmp_path, data):
    """SLURM's timeout_min, read from the composed launcher: a preparation of 3.1 h under a 1-hour limit would
    start over at every requeue, as would a pre-training whose first checkpoint comes after 12 h."""
    assert_refused(plan(tmp_path / "root", data, "hydra.launcher.timeout_min=60"), tmp_path / "root",
                   "stage prepare", "3.1 h without saving", "time limit of 1 h", "hydra.launcher.timeout_min")
    # 10,000 steps of 4 M tokens at 16 x 35 k tokens/s: 20.8 h between checkpoints, over phase 1's 12 h
    assert_refused(plan(tmp_path / "root", data, "trainer.checkpoint_every=10000", "trainer.checkpoint_minutes=0"),
                   tmp_path / "root", "stage pretrain", "13.3 h without saving", "time limit of 12 h",
                   "trainer.checkpoint_minutes")
    # the preset's checkpoint every 20 minutes keeps it within the limit
    assert plan(tmp_path / "root", data, "trainer.checkpoint_every=10000").returncode == 0
