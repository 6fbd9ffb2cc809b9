"""The prepared token stores (detox.data.store): a true random toxic sample per seed, and packing that restarts
by itself after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detox.core.cache import StageCache
from detox.core.schema import ConfigError
from detox.core.shards import open_mixture
from detox.core.tokens import olmo_tokenizer
from detox.data.corpora import SourceSpec, iter_documents
from detox.data.packing import pack_mixture
from detox.data.documents import Document
from detox.data.store import TOXIC_DOCUMENTS, TokenStore, prepare_store, sample_mixture, store_summary

REPO = Path(__file__).resolve().parents[2]


def write_pol(path: Path, threads: int) -> None:
    """A /pol/ NDJSON file as the release has it, in file (chronological) order: a thread a line, its posts'
    4chan HTML in `com`, Perspective scores in `perspectives` (some posts image-only, some unscored)."""
    with open(path, "w") as f:
        for t in range(threads):
            posts = [{"no": 10 * t + p, "time": 1466000000 + 60 * (10 * t + p),
                      "com": (f'<a href="#p{10 * t}" class="quotelink">&gt;&gt;{10 * t}</a><br>thread {t} post {p} '
                              f"says &quot;{'word ' * (3 + (t * 7 + p) % 11)}&quot;") if (t + p) % 9 else None,
                      "perspectives": {"TOXICITY": ((t * 31 + p) % 100) / 100} if p % 4 else {}}
                     for p in range(5)]
            f.write(json.dumps({"posts": posts, "extracted_poster_id": {}}) + "\n")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A clean store of plain documents and the toxic store of a 600-thread /pol/ file, OLMo's tokenizer."""
    root = tmp_path_factory.mktemp("stores")
    write_pol(root / "pol.ndjson", 600)
    tokenizer = olmo_tokenizer()
    clean = [f"clean document {i} about the weather and the town." for i in range(3000)]
    prepare_store(clean, tokenizer, root / "clean", max_tokens=20_000)
    toxic = (Document(text, toxicity=score) for text, score in iter_documents(SourceSpec(str(root / "pol.ndjson"),
                                                                                         format="fourchan")))
    prepare_store(toxic, tokenizer, root / "toxic")
    return root


def test_a_store_holds_each_document_once_with_its_index(stores):
    toxic = TokenStore(stores / "toxic")
    summary = store_summary(stores / "toxic")
    assert summary == {"store_tokens": int(toxic.offsets[-1]), "store_docs": len(toxic)}
    tokenizer = olmo_tokenizer()
    first = next(iter_documents(SourceSpec(str(stores / "pol.ndjson"), format="fourchan")))[0]
    assert toxic.document(0).tolist() == tokenizer.encode(first, add_special_tokens=False).ids + [tokenizer.token_to_id("<|endoftext|>")]
    clean = TokenStore(stores / "clean")
    assert clean.offsets[-1] >= 20_000 > clean.offsets[-2]  # stops at the document that reaches max_tokens


def test_two_seeds_share_only_the_toxic_documents_chance_gives_them(stores, tmp_path):
    """Seeds 1 and 2 of one ratio: the overlap of their toxic documents against a random sample's expected
    overlap (hypergeometric: n1 n2 / N); the streaming packer over the same file in file order, for contrast."""
    clean, toxic = TokenStore(stores / "clean"), TokenStore(stores / "toxic")
    drawn = {}
    for seed in (1, 2):
        metrics = sample_mixture(clean, toxic, 10, 20_000, seed, tmp_path / f"seed{seed}")
        drawn[seed] = np.load(tmp_path / f"seed{seed}" / TOXIC_DOCUMENTS)
        assert metrics["mix_toxic_docs"] == len(drawn[seed]) and metrics["mix_toxic_repeats"] == 0
        assert len(set(drawn[seed].tolist())) == len(drawn[seed])
    n, (n1, n2) = len(toxic), (len(drawn[1]), len(drawn[2]))
    shared = len(set(drawn[1].tolist()) & set(drawn[2].tolist()))
    expected = n1 * n2 / n
    sd = np.sqrt(n1 * (n2 / n) * (1 - n2 / n) * (n - n1) / (n - 1))
    pairs = np.array([[len(set(_drawn(toxic, s).tolist()) & set(_drawn(toxic, s + 1).tolist())),
                       len(_drawn(toxic, s)) * len(_drawn(toxic, s + 1)) / n] for s in range(3, 103, 2)])
    # the streaming packer over the same file in file order through a shuffle buffer of 20 documents (its 10k
    # over the real file's ~100M posts is a far smaller share): what it took
    posts = [Document(text, tags=frozenset({str(i)})) for i, (text, _) in
             enumerate(iter_documents(SourceSpec(str(stores / "pol.ndjson"), format="fourchan")))]
    streamed = []
    for seed in (1, 2):
        taken = Counter()
        pack_mixture([f"clean document {i} about the weather and the town." for i in range(3000)], posts,
                     olmo_tokenizer(), 10, 20_000, seed, tmp_path / f"stream{seed}", taken=taken,
                     shuffle_buffer=20)
        streamed.append({int(next(iter(tags))) for part, tags in taken if part == "toxic"})
    print(f"\n{n} toxic documents, seeds 1 and 2 draw {n1} and {n2}: shared {shared}, a random sample expects "
          f"{expected:.1f} (sd {sd:.1f}); over 50 more seed pairs shared {pairs[:, 0].mean():.2f} on average, "
          f"expected {pairs[:, 1].mean():.2f}; mean index drawn {drawn[1].mean():.0f} of {n}; the streaming "
          f"packer's seeds 1 and 2 shared {len(streamed[0] & streamed[1])} of {len(streamed[0])} and "
          f"{len(streamed[1])} (expected by chance {len(streamed[0]) * len(streamed[1]) / n:.1f})")
    assert abs(shared - expected) <= 3 * sd
    assert abs(pairs[:, 0].mean() - pairs[:, 1].mean()) <= 3 * sd / np.sqrt(len(pairs))
    assert abs(drawn[1].mean() - (n - 1) / 2) <= 4 * n / np.sqrt(12 * n1)  # not biased to the file's start


def _drawn(toxic: TokenStore, seed: int) -> np.ndarray:
    from detox.data.store import _toxic_sample

    return _toxic_sample(toxic, 2000, seed, 0, "toxic")


def test_a_ratio_the_toxic_store_cannot_fill_is_refused_before_writing(stores, tmp_path):
    clean, toxic = TokenStore(stores / "clean"), TokenStore(stores / "toxic")
    with pytest.raises(ConfigError, match=r"data.corpora.toxic holds [\d,]+ tokens .*needs [\d,]+ toxic tokens"):
        sample_mixture(clean, toxic, 90, 20_000, 1, tmp_path / "m", toxic_name="data.corpora.toxic")
    assert not list((tmp_path / "m").glob("tokens-*"))
    repeated = sample_mixture(clean, toxic, 90, 20_000, 1, tmp_path / "r", on_short="repeat", max_repeats=20)
    assert repeated["mix_toxic_repeats"] > 0 and repeated["mix_realised_ratio"] == pytest.approx(90, abs=0.5)


KILLED_PACKING = """
import sys, time
sys.path.insert(0, "tests")
from helpers import tiny_tokenizer
from detox.core.cache import StageCache
from detox.data import packing
packing.FLUSH_TOKENS = 64  # write early and often, so a kill finds shards on disk

def slow(texts):
    for text in texts:
        time.sleep(0.001)
        yield text

clean = [f"the cat sat on the mat {i}" for i in range(3000)]
toxic = [f"you are a rude goblin {i}" for i in range(3000)]
StageCache(sys.argv[1]).get_or_build("mixture", {"ratio": 20}, lambda out: packing.pack_mixture(
    slow(clean) if sys.argv[2] == "slow" else clean, toxic, tiny_tokenizer().backend_tokenizer, 20, 20_000, 3, out,
    shard_tokens=2_000, batch_size=50))
"""


def pack(cache: Path, pace: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLED_PACKING, str(cache), pace], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_a_packing_killed_half_way_finishes_when_run_again_and_equals_an_uninterrupted_one(tmp_path):
    assert pack(tmp_path / "whole", "fast").wait(timeout=120) == 0
    job = pack(tmp_path / "killed", "slow")
    partial = tmp_path / "killed" / "mixture"
    deadline = time.time() + 120
    while len(list(partial.glob("*.partial/tokens-*.bin"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    left = sorted(partial.glob("*.partial/tokens-*.bin"))
    assert len(left) >= 3 and not list(partial.glob("*.partial/index.json"))  # killed half-way, shards on disk
    assert pack(tmp_path / "killed", "fast").wait(timeout=120) == 0  # the same job again, nobody cleaning up
    whole, again = (next(p for p in (tmp_path / run / "mixture").iterdir() if p.is_dir()) for run in ("whole", "killed"))
    files = sorted(p.name for p in whole.iterdir())
    assert files == sorted(p.name for p in again.iterdir()) and len([f for f in files if f.startswith("tokens")]) > 3
    for name in files:
        assert (whole / name).read_bytes() == (again / name).read_bytes(), name
    assert open_mixture(again).total_tokens == open_mixture(whole).total_tokens


def test_a_complete_folder_is_still_refused(tmp_path):
    prepare_store(["a b c"] * 10, olmo_tokenizer(), tmp_path)
    with pytest.raises(ConfigError, match="already holds a complete packing"):
        prepare_store(["a b c"] * 10, olmo_tokenizer(), tmp_path)


def test_the_cache_hands_a_killed_builds_folder_back(tmp_path):
    """The stage cache's side of the restart: a `.partial` folder left by a kill is the next build's work folder."""
    cache = StageCache(tmp_path)
    work = cache.work_path("mixture", "k")
    work.mkdir(parents=True)
    (work / "tokens-00000.bin").write_bytes(b"\0\0")
    prepare_store(["a b c"] * 10, olmo_tokenizer(), work)
    store = TokenStore(work)
    assert len(store) == 10 and store.offsets[-1] == store.tokens.total_tokens == 40  # 3 tokens and EOS each
