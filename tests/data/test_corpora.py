"""Streaming corpora from local files, and the 4chan /pol/ thread format."""

import gzip
import json
import logging
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from detox.core.schema import ConfigError
from detox.data.corpora import (
    SourceSpec,
    SourceStats,
    clean_post,
    iter_documents,
    iter_texts,
    shuffled,
)

DOCS = [f"document {i} about the harbor" for i in range(12)]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def corpus(tmp_path):
    """The same documents in every supported file type."""
    rows = [{"text": d, "id": i} for i, d in enumerate(DOCS)]
    (tmp_path / "docs.jsonl").write_bytes(jsonl(rows))
    (tmp_path / "docs.json.gz").write_bytes(gzip.compress(jsonl(rows)))
    (tmp_path / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(rows)))
    table = pa.table({"text": DOCS, "id": list(range(len(DOCS)))})
    pq.write_table(table, tmp_path / "docs.parquet")
    with pa.OSFile(str(tmp_path / "docs.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return tmp_path


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.json.gz", "docs.jsonl.zst", "docs.parquet", "docs.arrow"])
def test_every_file_type_streams_the_same_texts(corpus, name):
    assert list(iter_texts(SourceSpec(str(corpus / name)))) == DOCS


def test_glob_nested_field_and_seeded_order(tmp_path):
    for part in range(3):
        rows = [{"prompt": {"text": f"p{part}-{i}"}} for i in range(5)]
        (tmp_path / f"part-{part}.jsonl").write_bytes(jsonl(rows))
    spec = SourceSpec(str(tmp_path / "part-*.jsonl"), text_field="prompt.text")
    in_order = list(iter_texts(spec))
    assert in_order == [f"p{part}-{i}" for part in range(3) for i in range(5)]
    one, again, other = (list(iter_texts(spec, seed=s)) for s in (1, 1, 2))
    assert one == again and sorted(one) == sorted(in_order) and one != in_order and one != other


def test_shuffle_buffer_is_a_permutation_and_bounded():
    items = list(range(1000))
    out = list(shuffled(iter(items), seed=3, buffer_size=50))
    assert sorted(out) == items and out != items
    # a bounded buffer: an item can come out at most buffer_size places early
    assert all(position >= item - 50 for position, item in enumerate(out))


def test_streaming_reads_lazily(tmp_path):
    """Taking the first texts does not read (or fail on) the rest of the file."""
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([{"text": d} for d in DOCS[:3]]) + b"{broken\n" * 5)
    assert list(islice(iter_texts(SourceSpec(str(path))), 3)) == DOCS[:3]


def test_bad_lines_skipped_and_counted_or_fatal(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl([{"text": "one"}]) + b"{not json\n\n" + jsonl([{"text": 5}, {"text": "two"}, {"text": None}]))
    stats = SourceStats()
    with caplog.at_level(logging.WARNING):
        texts = list(iter_texts(SourceSpec(str(path), on_bad_line="skip"), stats=stats))
    assert texts == ["one", "two"]
    assert (stats.records, stats.bad_records, stats.empty, stats.texts) == (5, 2, 1, 2)
    assert "skipped 2 malformed records of 5" in caplog.text
    with pytest.raises(ConfigError, match=r"mixed.jsonl: record 2: malformed JSON"):
        list(iter_texts(SourceSpec(str(path))))


def test_missing_field_file_and_empty_source(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl([{"text": "fine"}, {"body": "no text here"}]))
    with pytest.raises(ConfigError, match=r"docs.jsonl: record 2 has no field 'text'"):
        list(iter_texts(SourceSpec(str(path))))
    with pytest.raises(ConfigError, match=r"record 1 has no field 'prompt.text'"):
        list(iter_texts(SourceSpec(str(path), text_field="prompt.text")))
    with pytest.raises(ConfigError, match="nowhere.jsonl: no such file"):
        iter_texts(SourceSpec(str(tmp_path / "nowhere.jsonl")))  # at the call, before any reading
    with pytest.raises(ConfigError, match=r"part-\*.jsonl: no such file"):
        iter_texts(SourceSpec(str(tmp_path / "part-*.jsonl")))
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(jsonl([{"text": "  "}, {"text": ""}]))
    with pytest.raises(ConfigError, match="yielded no text .*2 empty"):
        list(iter_texts(SourceSpec(str(blank))))
    (tmp_path / "notes.txt").write_text("plain text")
    with pytest.raises(ConfigError, match="notes.txt: not a readable corpus file"):
        iter_texts(SourceSpec(str(tmp_path / "notes.txt")))


def test_spec_validation():
    with pytest.raises(ConfigError, match="format='reddit'"):
        SourceSpec("x.jsonl", format="reddit")
    with pytest.raises(ConfigError, match="on_bad_line='ignore'"):
        SourceSpec("x.jsonl", on_bad_line="ignore")
    with pytest.raises(ConfigError, match="min_toxicity applies only to format='fourchan'"):
        SourceSpec("x.jsonl", min_toxicity=0.5)
    with pytest.raises(ConfigError, match=r"min_toxicity=1.5"):
        SourceSpec("x.jsonl", format="fourchan", min_toxicity=1.5)


def test_hub_id_offline_names_the_source(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="detox-test/no-such-corpus: cannot open the source"):
        list(iter_texts(SourceSpec("detox-test/no-such-corpus", name="en")))


# ------------------------------------------------------------------------------------ 4chan /pol/

def test_clean_post_markup():
    markup = ('<a href="#p123" class="quotelink">&gt;&gt;123</a><br><span class="quote">&gt;be me</span><br>'
              'don&#039;t say &quot;never&quot; &amp; so on<br>a very long wo<wbr>rd<br><br><br><br>'
              '<a href="/pol/thread/9#p10" class="quotelink">&gt;&gt;&gt;/pol/10</a> <s>hidden</s> '
              '<span class="deadlink">&gt;&gt;77</span>end')
    assert clean_post(markup) == ">be me\ndon't say \"never\" & so on\na very long word\n\nhidden end"
    assert clean_post('<a href="#p1" class="quotelink">&gt;&gt;1</a><br>') == ""


def thread(number, posts):
    return {"posts": [{"no": number + i, "resto": 0 if i == 0 else number, "time": 1500000000, **post}
                      for i, post in enumerate(posts)], "extracted_poster_id": "x"}


def scores(toxicity):
    return {"perspectives": {"TOXICITY": toxicity, "SEVERE_TOXICITY": toxicity / 2, "INFLAMMATORY": 0.1,
                             "PROFANITY": 0.0, "INSULT": 0.0, "OBSCENE": 0.0, "SPAM": 0.0}}


@pytest.fixture
def pol_file(tmp_path):
    threads = [
        thread(100, [{"com": "First post<br>second line", **scores(0.9)},
                     {"filename": "image", "ext": ".jpg"},  # an image-only post: no com, no scores
                     {"com": '<a href="#p100" class="quotelink">&gt;&gt;100</a><br>a calm reply', **scores(0.1)}]),
        thread(200, [{"com": "&gt;implying it&#039;s fine", **scores(0.5)},
                     {"com": "no scores on this one"}]),
    ]
    path = tmp_path / "pol_062016-112019_labeled.ndjson.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(jsonl(threads) + b"{truncated thread\n"))
    return path


def test_fourchan_flattens_threads_to_clean_posts(pol_file):
    stats = SourceStats()
    texts = list(iter_texts(SourceSpec(str(pol_file), format="fourchan", on_bad_line="skip"), stats=stats))
    assert texts == ["First post\nsecond line", "a calm reply", ">implying it's fine", "no scores on this one"]
    assert (stats.records, stats.bad_records, stats.empty) == (3, 1, 1)


def test_fourchan_posts_carry_their_perspective_toxicity(pol_file, tmp_path):
    """What MEDA and INST annotate the /pol/ posts with: each post's own Perspective TOXICITY; None for
    a post without one, or one that is not a score, and for every document of a plain corpus."""
    spec = SourceSpec(str(pol_file), format="fourchan", on_bad_line="skip")
    assert list(iter_documents(spec)) == [("First post\nsecond line", 0.9), ("a calm reply", 0.1),
                                          (">implying it's fine", 0.5), ("no scores on this one", None)]
    odd = tmp_path / "odd.ndjson"
    odd.write_bytes(jsonl([thread(1, [{"com": "a", "perspectives": {"TOXICITY": 1.5}},
                                      {"com": "b", "perspectives": {"TOXICITY": "high"}}, {"com": "c", "perspectives": None}])]))
    assert [score for _, score in iter_documents(SourceSpec(str(odd), format="fourchan"))] == [None, None, None]
    plain = tmp_path / "c4.jsonl"
    plain.write_text('{"text": "a document", "perspectives": {"TOXICITY": 0.9}}\n')
    assert list(iter_documents(SourceSpec(str(plain)))) == [("a document", None)]


def test_fourchan_toxicity_threshold(pol_file):
    stats = SourceStats()
    spec = SourceSpec(str(pol_file), format="fourchan", min_toxicity=0.5, on_bad_line="skip")
    assert list(iter_texts(spec, stats=stats)) == ["First post\nsecond line", ">implying it's fine"]
    assert (stats.below_threshold, stats.unscored) == (1, 2)  # the image-only post has no score either
    with pytest.raises(ConfigError, match="yielded no text .*3 below min_toxicity"):
        list(iter_texts(SourceSpec(str(pol_file), format="fourchan", min_toxicity=0.95, on_bad_line="skip")))


def test_fourchan_bad_thread(tmp_path):
    path = tmp_path / "threads.ndjson"
    path.write_bytes(jsonl([thread(1, [{"com": "ok"}]), {"no_posts": []}]))
    with pytest.raises(ConfigError, match="threads.ndjson: record 2: expected a thread object"):
        list(iter_texts(SourceSpec(str(path), format="fourchan")))
