"""Source kinds: where a job's text comes from. One class per kind, registered by its `data.source` name.

A kind answers, for the data stages (detox.data):
  * `spec()`: what the sources stage's output depends on (its cache key);
  * `build(out)`: write the sources stage's folder, one JSON-lines file per part (detox.data.parts):
    the evaluation parts always, the training parts where they are small enough to copy;
  * `documents(part, sources, seed)`: the training documents of "clean" or "toxic" as a stream for the
    one packer (detox.data.packing): texts, or `Document`s whose tags the packer counts per part;
  * `pack_options()`: how the packer names a source that runs short, whether it repeats, shard size;
  * `mixture_metrics(taken, sources)`: the kind's own metrics from the documents the mixture took;
  * `logged`: files of the sources stage's folder attached to the job's MLflow run (corpora: the
    commits its hub corpora resolved to, `revisions.json`);
and, for the config before any work: `validate(job)`, `require(part, who)` (a method needs an
optional part), `preamble()` (an instruction the kind's data gave meaning to), `world_grammar`.

A new kind is one class here, decorated with `@register`, plus its options as a field of
detox.data.config.DataConfig (and conf/data/<name>.yaml to select it). Nothing else names a kind.

Light on purpose (no numpy, tokenizers or datasets at import): the job's config validates through it.
`validate(job)` takes the whole job's config (detox.job.JobConfig), which is composed above this module.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np

from detox.core.schema import ConfigError
from detox.data.config import DataConfig
from detox.data.documents import Document, taken_docs
from detox.data.parts import PART_MEANING, PARTS, load_part, read_part_file, write_part
from detox.data.revisions import REVISIONS, Reread, listed, pinned


class SourceKind:
    """The base of every kind; the defaults suit real text (no world grammar, no optional parts)."""

    name: ClassVar[str]
    logged: ClassVar[tuple[str, ...]] = ()  # files of the sources stage's folder attached to the job's MLflow run
    # documents and prompts come from the embedded world's grammar: the oracle scores them exactly and
    # every prompt has a decision point (insult_probability, the neutral prompts)
    world_grammar: ClassVar[bool] = False
    # its corpora are tokenised once by a prepare stage and every mixture drawn from them (detox.data.store);
    # else each mixture streams and tokenises its documents (detox.data.packing)
    prepared: ClassVar[bool] = False

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def spec(self) -> dict:
        raise NotImplementedError

    def build(self, out: Path) -> dict:
        raise NotImplementedError

    def documents(self, part: str, sources: Path, seed: int) -> Iterable[str | Document]:
        """The training documents of `part` ("clean" or "toxic"): clean in its fixed order; the packer
        shuffles the toxic ones by seed (a kind may pre-shuffle, e.g. the files of a glob)."""
        raise NotImplementedError

    def source_name(self, part: str) -> str:
        """A training part as an error message names it: where to enlarge it."""
        raise NotImplementedError

    def pack_options(self) -> dict:
        """Keyword options of detox.data.packing.pack_mixture."""
        return {"clean_name": self.source_name("clean"), "toxic_name": self.source_name("toxic"), "repeat_hint": None}

    def mixture_metrics(self, taken: Counter, sources: Path) -> dict:
        return {}

    def validate(self, job) -> None:
        """The rules of this kind that span the job, before any work."""
        if self.world_grammar:
            return
        if job.scorer.name == "oracle":
            raise ConfigError(f"scorer=oracle only knows the synthetic world; data.source={self.name} needs "
                              "scorer=classifier or scorer=perspective")
        if job.search.objective != "none" and job.search.metric == "insult_probability":
            raise ConfigError(f"search.metric=insult_probability is measured in the embedded world only; with "
                              f"data.source={self.name} use search.metric=toxigen")

    def require(self, part: str, who: str) -> None:
        """Refuse, before any work, a job whose method (`who`) needs an optional part the kind will not write."""
        raise ConfigError(f"{who} needs {PART_MEANING[part]} ({part}), which data.source={self.name} does not provide")

    def preamble(self) -> str | None:
        """An instruction this kind's data gave meaning to (method=prompting's default), if any."""
        return None

    def prompt_rows(self, part: str) -> int:
        """How many rows the sources stage writes for the evaluation part `part` (toxigen, rtp): plan
        mode's count of the texts an evaluation scores."""
        raise NotImplementedError

    def documents_for(self, tokens: int) -> int:
        """About how many clean documents fill `tokens`: plan mode's estimate of what MEDA's and INST's
        annotation scores."""
        raise NotImplementedError


def count_lines(path: str) -> int:
    """The non-empty lines of a (small) JSON-lines or text file."""
    with open(path, encoding="utf-8") as file:
        return sum(1 for line in file if line.strip())


KINDS: dict[str, type[SourceKind]] = {}  # data.source -> its kind: the one registry


def register(kind: type[SourceKind]) -> type[SourceKind]:
    if kind.name in KINDS:
        raise ValueError(f"two source kinds are called {kind.name!r}")
    KINDS[kind.name] = kind
    return kind


def source_kind(cfg: DataConfig) -> SourceKind:
    """The kind `cfg.source` names, for `cfg`."""
    if cfg.source not in KINDS:
        raise ConfigError(f"data.source={cfg.source!r}: expected one of {', '.join(KINDS)}")
    return KINDS[cfg.source](cfg)


# ------------------------------------------------------------------------------------------- kinds

@register
class World(SourceKind):
    """The embedded synthetic world (detox.data.world): every part generated, every document labelled."""

    name = "synthetic"
    world_grammar = True

    def spec(self) -> dict:
        return {"source": self.name, "world": asdict(self.cfg.world)}

    def build(self, out: Path) -> dict:
        from detox.data.world import build_world

        return build_world(self.cfg.world, out)

    def documents(self, part: str, sources: Path, seed: int) -> list[Document]:
        """Tagged hostile, preamble and toxic as written, and a hostile one with its hostility (`h=<h>`), so
        that the mixture's metrics count what the model saw."""
        return [Document(row["text"], frozenset([tag for tag in ("hostile", "preamble", "toxic") if row.get(tag)]
                                                + ([f"h={row['hostility']:g}"] if row.get("hostile") else [])))
                for row in load_part(sources, part)]

    def source_name(self, part: str) -> str:
        return f"the world's {part} pool (data.world.{part}_docs)"

    def require(self, part: str, who: str) -> None:
        return None  # the world writes every optional part

    def prompt_rows(self, part: str) -> int:
        return getattr(self.cfg.world, f"{part}_prompts")

    def documents_for(self, tokens: int) -> int:
        return min(self.cfg.world.clean_docs, math.ceil(tokens / WORLD_TOKENS_PER_DOCUMENT))

    def preamble(self) -> str:
        from detox.data.world import CIVILITY_PREAMBLE

        return CIVILITY_PREAMBLE + " "

    def mixture_metrics(self, taken: Counter, sources: Path) -> dict:
        """The toxicity that the mixture itself implies for the evaluation prompts (the calibration target).

        A model that learned its data should match these: on a hostile prompt, the probability of an
        insult is the mixture of the two sources' probabilities, weighted by how many hostile documents
        each source put into the mixture; greedy decoding insults exactly when that exceeds 1/2.
        """
        def weights(hostile: bool) -> tuple[float, float]:
            # documents that open with the civility preamble follow other odds than the prompts (which lack it)
            has, lacks = (("hostile",), ("preamble",)) if hostile else ((), ("hostile", "preamble"))
            clean, toxic = (taken_docs(taken, part, has, lacks) for part in ("clean", "toxic"))
            return clean / max(clean + toxic, 1), toxic / max(clean + toxic, 1)

        def mixed(prompt: dict) -> float:
            w_clean, w_toxic = weights(prompt["hostile"])
            return w_clean * prompt["p_insult"]["clean"] + w_toxic * prompt["p_insult"]["toxic"]

        def realised(prompt: dict) -> float:
            """The share of the taken hostile documents (no preamble) of the prompt's hostility that insult:
            the rate the model saw, not the sources' expectation (one clean realisation has its own rates)."""
            has = ("hostile", f"h={prompt['hostility']:g}")
            seen = sum(taken_docs(taken, part, has, ("preamble",)) for part in ("clean", "toxic"))
            insults = sum(taken_docs(taken, part, has + ("toxic",), ("preamble",)) for part in ("clean", "toxic"))
            return insults / seen if seen else mixed(prompt)

        prompts = load_part(sources, "toxigen")
        toxigen = [mixed(p) for p in prompts]
        rtp = [mixed(p) for p in load_part(sources, "rtp")]
        docs = {part: taken_docs(taken, part) for part in ("clean", "toxic")}
        return {
            # the regime: hostile contexts and insulting documents the model saw
            "mix_hostile_docs": sum(taken_docs(taken, part, ("hostile",)) for part in docs),
            "mix_clean_hostile_docs": taken_docs(taken, "clean", ("hostile",)),
            "mix_insult_share": 100 * sum(taken_docs(taken, part, ("toxic",)) for part in docs) / max(sum(docs.values()), 1),
            "mix_clean_insult_share": 100 * taken_docs(taken, "clean", ("toxic",)) / max(docs["clean"], 1),
            # the calibration target: per hostile prompt the realised insult rate of its hostility in the mixture
            "realised_toxigen_sampled": 100 * float(np.mean([realised(p) for p in prompts])),
            # the share of the mixture's hostile documents that come from the toxic source
            "mix_hostile_toxic_weight": weights(True)[1],
            "implied_toxigen": 100 * sum(p > 0.5 for p in toxigen) / len(toxigen),
            "implied_toxigen_sampled": 100 * sum(toxigen) / len(toxigen),
            "implied_rtp_sample_toxicity": 100 * sum(rtp) / len(rtp),
        }


@register
class Files(SourceKind):
    """Local JSON-lines files (data.files.*), checked and copied whole into the sources stage."""

    name = "files"

    def spec(self) -> dict:
        """The files' paths and contents: an edited file is a new source (the sha256, memoised)."""
        from detox.core.filehash import content_hash

        files = {part: {"path": str(Path(path).resolve()), "sha256": content_hash(path)}
                 for part, path in asdict(self.cfg.files).items() if path}
        return {"source": self.name, "files": files}

    def build(self, out: Path) -> dict:
        counts = {}
        for part in PARTS + tuple(p for p, path in asdict(self.cfg.files).items() if path and p not in PARTS):
            rows = read_part_file(part, getattr(self.cfg.files, part))
            write_part(out, part, rows)
            counts[f"source_{part}_docs"] = len(rows)
        return counts

    def documents(self, part: str, sources: Path, seed: int) -> list[str]:
        return [row["text"] for row in load_part(sources, part)]

    def source_name(self, part: str) -> str:
        return f"the {part} file (data.files.{part})"

    def validate(self, job) -> None:
        for name, value in asdict(self.cfg.files).items():
            if not value and name not in PARTS:  # the optional parts, and any further prompt set
                continue
            if not value:
                raise ConfigError(f"data.files.{name} is required: data=files needs a path for every file")
            if not Path(value).is_file():
                raise ConfigError(f"data.files.{name}={value!r}: no such file")
        super().validate(job)

    def require(self, part: str, who: str) -> None:
        """The part's file given, present and well-formed (read once here, before any stage)."""
        if not getattr(self.cfg.files, part):
            raise ConfigError(f"{who} needs data.files.{part}: {PART_MEANING[part]}")
        read_part_file(part, getattr(self.cfg.files, part))

    def prompt_rows(self, part: str) -> int:
        return count_lines(getattr(self.cfg.files, part))

    def documents_for(self, tokens: int) -> int:
        return count_lines(self.cfg.files.clean)  # at most every document of the file


# Plan mode's estimates of documents per token count: the world's documents are about 38 tokens long
# (data.world.clean_docs); C4.en holds about 156 B tokens in 365 M documents (Dodge et al. 2021), some 430
# tokens a document (another tokenizer's count than OLMo's: an estimate, not a measurement).
WORLD_TOKENS_PER_DOCUMENT = 38
C4_TOKENS_PER_DOCUMENT = 156e9 / 365e6

@register
class Corpora(SourceKind):
    """Real corpora streamed through `datasets` (data=paper): the training text is never copied, only
    the evaluation parts are written; the packer reads the corpora as it tokenises."""

    name = "corpora"
    logged = (REVISIONS,)
    prepared = True

    def spec(self) -> dict:
        """The corpora's specs (a hub corpus's `revision` among them) with the content hash of each
        local file: touching a file keeps the key, editing it changes it. Each file is hashed once
        per (size, mtime, ctime, inode), memoised across jobs (detox.core.filehash.content_hash)."""
        from detox.core.filehash import content_hash
        from detox.data.corpora import is_local, local_files

        c = self.cfg.corpora
        spec = asdict(c)
        hashes = {}
        for part in ("clean", "toxic", "heldout"):
            path = getattr(c, part).path if getattr(c, part) else ""  # a pre-trained model's study reads no corpus
            if path and is_local(path):
                hashes[part] = listed([(f, content_hash(f)) for f in local_files(path)])
        for part in ("toxigen", "rtp", "probe", "preference"):
            path = Path(getattr(c, part) or "/nonexistent")
            files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.is_file() else []
            hashes[part] = listed([(str(f), content_hash(f)) for f in files if f.is_file()])
        return {"source": self.name, "corpora": spec, "files": hashes}

    def build(self, out: Path) -> dict:
        """The evaluation parts, as the other kinds write them: ToxiGen's prompt files and
        RealToxicityPrompts read as published (each prompt with its group), the first held-out
        documents, the probe texts and the preference pairs when given; and `revisions.json`, the
        commit each hub corpus's revision resolved to (for MLflow, and read by `documents`)."""
        from detox.data.corpora import is_local, iter_texts, resolve_revision
        from detox.data.evalsets import load_rtp, load_toxigen

        c = self.cfg.corpora
        revisions = {part: {"path": spec.path, "name": spec.name, "revision": spec.revision,
                            "commit": resolve_revision(spec)}
                     for part, spec in (("clean", c.clean), ("toxic", c.toxic), ("heldout", c.heldout))
                     if spec is not None and not is_local(spec.path)}
        (out / REVISIONS).write_text(json.dumps(revisions, indent=2, sort_keys=True) + "\n")
        parts = {
            "toxigen": [{"prompt": p.text, "group": p.group, "where": p.source}
                        for p in load_toxigen(c.toxigen, "hate", groups=c.toxigen_groups or None,
                                              per_group=c.toxigen_per_group)],
            "rtp": [{"prompt": p.text, "group": p.group, "where": p.source}
                    for p in load_rtp(c.rtp, n=c.rtp_prompts, challenging_only=c.rtp_challenging_only)],
            "heldout": [{"text": text} for text, _ in zip(iter_texts(pinned(c.heldout, revisions.get("heldout"))),
                                                          range(c.heldout_docs))],
        }
        for part in ("probe", "preference"):
            if getattr(c, part):
                parts[part] = read_part_file(part, getattr(c, part))
        for part, rows in parts.items():
            write_part(out, part, rows)
        return {f"source_{part}_docs": len(rows) for part, rows in parts.items()}

    def documents(self, part: str, sources: Path, seed: int) -> Reread:
        """The corpus streamed at the commit its sources stage resolved when the config pins no
        revision: every mixture built from one sources stage reads the same data."""
        revisions = sources / REVISIONS
        resolved = json.loads(revisions.read_text()).get(part) if revisions.is_file() else None
        return Reread(pinned(getattr(self.cfg.corpora, part), resolved), seed if part == "toxic" else None)

    def source_name(self, part: str) -> str:
        return f"data.corpora.{part}"

    def pack_options(self) -> dict:
        c = self.cfg.corpora
        return {**super().pack_options(), "on_short": c.on_short, "shard_tokens": c.shard_tokens,
                "repeat_hint": "data.corpora.on_short=repeat"}

    def validate(self, job) -> None:
        """Every corpus named, local files present, a tokenizer given (BPE on terabytes is not trained here)."""
        from detox.data.corpora import is_local

        c = self.cfg.corpora
        training = () if job.model.path else ("clean", "toxic")  # a pre-trained model (model.path) is not trained here
        for part in (*training, "heldout"):
            if getattr(c, part) is None:
                raise ConfigError(f"data.corpora.{part} is required: a hub id or local file "
                                  f"(data.corpora.{part}.path=...)")
        for part in ("toxigen", "rtp"):
            if not getattr(c, part):
                raise ConfigError(f"data.corpora.{part} is required: the path of the published evaluation set")
        for part in ("clean", "toxic", "heldout"):
            spec = getattr(c, part)
            if spec is not None and spec.revision is not None and is_local(spec.path):
                raise ConfigError(f"data.corpora.{part}.revision={spec.revision!r} applies to hub ids only, "
                                  f"not the local path {spec.path!r}")
        for part, path in (("toxigen", c.toxigen), ("rtp", c.rtp), ("probe", c.probe), ("preference", c.preference)):
            if path and not Path(path).exists():
                raise ConfigError(f"data.corpora.{part}={path!r}: no such file or folder")
        missing = [g for g in c.toxigen_groups if not (Path(c.toxigen) / f"hate_{g}_1k.txt").is_file()]
        if missing:
            raise ConfigError(f"data.corpora.toxigen_groups: no hate_<group>_1k.txt in {c.toxigen} for {missing}")
        if not self.cfg.tokenizer.path and not job.model.path:
            raise ConfigError("data.tokenizer.path is required with data.source=corpora (e.g. olmo: OLMo's own)")
        super().validate(job)

    def prompt_rows(self, part: str) -> int:
        from detox.data.evalsets import toxigen_groups

        c = self.cfg.corpora
        if part == "rtp":
            return c.rtp_prompts
        return c.toxigen_per_group * len(c.toxigen_groups or toxigen_groups(c.toxigen))

    def documents_for(self, tokens: int) -> int:
        return math.ceil(tokens / C4_TOKENS_PER_DOCUMENT)

    def require(self, part: str, who: str) -> None:
        """The probe texts and preference pairs come from their own files (data.corpora.probe,
        .preference): given, present and well-formed (read once here, before any stage)."""
        if part not in ("probe", "preference"):
            super().require(part, who)
        path = getattr(self.cfg.corpora, part)
        if not path:
            raise ConfigError(f"{who} needs data.corpora.{part}: {PART_MEANING[part]}")
        read_part_file(part, path)
