"""Data stage: sources -> tokenizer -> the packed token mixture of one (ratio, seed).

`data.source` picks a source kind (detox.data.sources: the embedded world, local JSON-lines files,
streamed corpora); the kind writes the sources stage and gives the training documents, and every kind's
mixture is packed by the one packer (detox.data.packing) into memory-mapped token shards.

Ratio p means toxic tokens are p % of the mixture's tokens with the clean tokens fixed at C: the
mixture adds `toxic_tokens_for(C, p)` = C * p / (100 - p) toxic tokens (as in the paper, where clean
C4 is held constant and 4chan data is added on top). Clean documents are taken in order, so every
ratio and seed trains on the same clean text; the seed picks which toxic documents are added and
where they go.

Modules: sources (the source kinds, one class each, one registry; a kind builds the sources stage),
stages (the tokenizer and mixture stages), parts (the sources stage's files), packing (the one packer), corpora (streaming
real corpora), evalsets (ToxiGen and RealToxicityPrompts in their published formats), annotate (MEDA
and INST). This file imports nothing, so that the light modules (sources, parts, corpora, which the
config reads) load without the stages.
"""
