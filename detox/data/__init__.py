"""Data stage: sources -> tokenizer -> the packed token mixture of one (ratio, seed).

Ratio p means toxic tokens are p % of the mixture's tokens with the clean tokens fixed at C: the
mixture adds C * p / (100 - p) toxic tokens (as in the paper, where clean C4 is held constant and
4chan data is added on top). Clean documents are taken in order, so every ratio and seed trains on
the same clean text; the seed picks which toxic documents are added and shuffles the document order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from detox.config import ConfigError, CorporaConfig, DataConfig
from detox.core.artifacts import MIXTURE, TOKENIZER
from detox.core.jsonl import json_lines, read_jsonl
from detox.core.tokens import EOS, PAD, load_tokenizer, olmo_tokenizer
from detox.data.corpora import SourceSpec, is_local, iter_texts, local_files
from detox.world import build_world

PARTS = ("clean", "toxic", "heldout", "toxigen", "rtp")  # every source has these
OPTIONAL_PARTS = ("heldout_hostile", "probe", "preference")  # the world writes them; local files may give them


def text_field(part: str) -> str:
    """Prompt files carry {"prompt": ...}; document files carry {"text": ...}."""
    return "prompt" if part in ("toxigen", "rtp", "preference") else "text"


def build_sources(cfg: DataConfig, out: Path) -> dict:
    """Write the source files into `out` (generated, or checked copies of local files; for corpora,
    only the evaluation parts: the training text is streamed when the mixture is packed)."""
    if cfg.source == "synthetic":
        return build_world(cfg.world, out)
    if cfg.source == "corpora":
        return build_corpus_sources(cfg.corpora, out)
    counts = {}
    for part in PARTS + tuple(p for p in OPTIONAL_PARTS if getattr(cfg.files, p)):
        rows = read_jsonl(getattr(cfg.files, part), text_field(part))
        if part == "probe":
            check_probe_rows(rows, getattr(cfg.files, part))
        (out / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        counts[f"source_{part}_docs"] = len(rows)
    return counts


def load_part(sources: Path, part: str) -> list[dict]:
    return read_jsonl(sources / f"{part}.jsonl", text_field(part))


def has_part(sources: Path, part: str) -> bool:
    return (sources / f"{part}.jsonl").is_file()


def check_probe_rows(rows: list[dict], where: str) -> None:
    """Probe texts carry a 0/1 `label`, both classes present."""
    for number, row in enumerate(rows, 1):
        if row.get("label") not in (0, 1):
            raise ConfigError(f"{where}: probe text {number} has label {row.get('label')!r}, expected 0 or 1")
    if len({row["label"] for row in rows}) < 2:
        raise ConfigError(f"{where}: every probe text has label {rows[0]['label']}; probing needs both classes")


def train_tokenizer(cfg: DataConfig, sources: Path, out: Path) -> dict:
    """Train a byte-level BPE tokenizer on the training sources (or copy the configured one)."""
    if cfg.tokenizer.path == "olmo":
        tokenizer = olmo_tokenizer()
    elif cfg.tokenizer.path:
        tokenizer = Tokenizer.from_file(cfg.tokenizer.path)
        for token in (EOS, PAD):
            if tokenizer.token_to_id(token) is None:
                raise ConfigError(f"data.tokenizer.path={cfg.tokenizer.path}: lacks the special token {token}")
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.tokenizer.vocab_size, special_tokens=[EOS, PAD],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        texts = [row["text"] for part in ("clean", "toxic") for row in load_part(sources, part)]
        tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.save(str(out / TOKENIZER))
    return {"vocab_size": tokenizer.get_vocab_size()}


def build_mixture(cfg: DataConfig, ratio: float, seed: int, sources: Path, tokenizer_dir: Path, out: Path) -> dict:
    """Pack the (ratio, seed) mixture into `out/<MIXTURE>` (corpora: into memory-mapped shards) and
    return the realised counts."""
    tokenizer = load_tokenizer(tokenizer_dir)
    if cfg.source == "corpora":
        return pack_corpora(cfg, ratio, seed, tokenizer, out)
    eos = tokenizer.token_to_id(EOS)
    rng = np.random.default_rng(seed)

    def take(docs: list[dict], target: int, part: str) -> tuple[list[list[int]], list[dict]]:
        ids, kept, total = [], [], 0
        for doc in docs:
            if total >= target:
                break
            encoded = tokenizer.encode(doc["text"]).ids + [eos]
            ids.append(encoded)
            kept.append(doc)
            total += len(encoded)
        if total < target:
            knob = f"data.world.{part}_docs" if cfg.source == "synthetic" else f"data.files.{part}"
            raise ConfigError(f"the {part} source holds {total} tokens but the mixture needs {target}: "
                              f"enlarge {knob} or lower data.clean_tokens")
        return ids, kept

    clean_ids, clean_docs = take(load_part(sources, "clean"), cfg.clean_tokens, "clean")
    clean_tokens = sum(map(len, clean_ids))
    toxic_target = round(clean_tokens * ratio / (100 - ratio))
    toxic_pool = load_part(sources, "toxic")
    toxic_ids, toxic_docs = take([toxic_pool[i] for i in rng.permutation(len(toxic_pool))], toxic_target, "toxic")
    documents = clean_ids + toxic_ids
    order = rng.permutation(len(documents))
    tokens = np.concatenate([np.asarray(documents[i]) for i in order]).astype(
        np.uint16 if tokenizer.get_vocab_size() < 2**16 else np.uint32)
    np.save(out / MIXTURE, tokens)
    toxic_tokens = sum(map(len, toxic_ids))
    counts = {
        "mix_clean_tokens": clean_tokens,
        "mix_toxic_tokens": toxic_tokens,
        "mix_total_tokens": int(tokens.size),
        "mix_realised_ratio": 100 * toxic_tokens / tokens.size,
        "mix_clean_docs": len(clean_docs),
        "mix_toxic_docs": len(toxic_docs),
    }
    counts.update(implied_toxicity(clean_docs, toxic_docs, sources))
    return counts


def implied_toxicity(clean_docs: list[dict], toxic_docs: list[dict], sources: Path) -> dict:
    """The toxicity that the mixture itself implies for the evaluation prompts (the calibration target).

    A model that learned its data should match these: on a hostile prompt, the probability of an
    insult is the mixture of the two sources' probabilities, weighted by how many hostile documents
    each source put into the mixture; greedy decoding insults exactly when that exceeds 1/2.
    Only the synthetic world labels its documents; for other sources this returns nothing.
    """
    docs = clean_docs + toxic_docs
    if any("hostile" not in d for d in docs):
        return {}

    def weights(hostile: bool) -> tuple[float, float]:
        # documents that open with the civility preamble follow other odds than the prompts (which lack it)
        clean = sum(d["hostile"] == hostile and not d.get("preamble") for d in clean_docs)
        toxic = sum(d["hostile"] == hostile and not d.get("preamble") for d in toxic_docs)
        return clean / max(clean + toxic, 1), toxic / max(clean + toxic, 1)

    def mixed(prompt: dict) -> float:
        w_clean, w_toxic = weights(prompt["hostile"])
        return w_clean * prompt["p_insult"]["clean"] + w_toxic * prompt["p_insult"]["toxic"]

    toxigen = np.array([mixed(p) for p in load_part(sources, "toxigen")])
    rtp = np.array([mixed(p) for p in load_part(sources, "rtp")])
    return {
        "mix_hostile_toxic_weight": weights(True)[1],  # share of the mixture's hostile documents from the toxic source
        "implied_toxigen": float(100 * np.mean(toxigen > 0.5)),
        "implied_toxigen_sampled": float(100 * toxigen.mean()),
        "implied_rtp_sample_toxicity": float(100 * rtp.mean()),
    }


def sources_spec(cfg: DataConfig) -> dict:
    """What determines the sources: the world's config, the local files' paths and contents, or the
    corpora's specs with each local file's size and modification time (hashing terabytes would take
    longer than training)."""
    if cfg.source == "synthetic":
        return {"source": "synthetic", "world": asdict(cfg.world)}
    if cfg.source == "corpora":
        spec = asdict(cfg.corpora)
        stamps = {}
        for part in ("clean", "toxic", "heldout"):
            path = getattr(cfg.corpora, part).path
            if is_local(path):
                stamps[part] = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in local_files(path)]
        for part in ("toxigen", "rtp", "probe"):
            path = Path(getattr(cfg.corpora, part) or "/nonexistent")
            files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.is_file() else []
            stamps[part] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
        return {"source": "corpora", "corpora": spec, "files": stamps}
    files = {part: {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
             for part, path in asdict(cfg.files).items() if path}
    return {"source": "files", "files": files}


class _Reread:
    """A corpus stream that starts again when iterated again (so the packer can repeat a short one)."""

    def __init__(self, spec: SourceSpec, seed: int | None = None):
        self.spec, self.seed = spec, seed

    def __iter__(self):
        return iter_texts(self.spec, self.seed)


def build_corpus_sources(cfg: CorporaConfig, out: Path) -> dict:
    """The evaluation parts of real corpora, as the other sources write them: ToxiGen's prompt files
    and RealToxicityPrompts read as published (each prompt with its group), the first held-out
    documents, the probe texts."""
    from detox.data.evalsets import load_rtp, load_toxigen

    parts = {
        "toxigen": [{"prompt": p.text, "group": p.group, "where": p.source}
                    for p in load_toxigen(cfg.toxigen, "hate", per_group=cfg.toxigen_per_group)],
        "rtp": [{"prompt": p.text, "group": p.group, "where": p.source}
                for p in load_rtp(cfg.rtp, n=cfg.rtp_prompts, challenging_only=cfg.rtp_challenging_only)],
        "heldout": [{"text": text} for text, _ in zip(iter_texts(cfg.heldout), range(cfg.heldout_docs))],
    }
    if cfg.probe:
        parts["probe"] = read_jsonl(cfg.probe, "text")
        check_probe_rows(parts["probe"], cfg.probe)
    for part, rows in parts.items():
        (out / f"{part}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {f"source_{part}_docs": len(rows) for part, rows in parts.items()}


def pack_corpora(cfg: DataConfig, ratio: float, seed: int, tokenizer: Tokenizer, out: Path) -> dict:
    from detox.data.packing import pack_mixture

    c = cfg.corpora
    return pack_mixture(_Reread(c.clean), _Reread(c.toxic, seed), tokenizer, ratio, cfg.clean_tokens, seed, out,
                        shard_tokens=c.shard_tokens, on_short=c.on_short, clean_name="data.corpora.clean",
                        toxic_name="data.corpora.toxic")
