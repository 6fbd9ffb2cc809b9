"""Toy superposition experiment (the paper's toy model of why bad data can help).

N Markov chains live on one shared state space. Chain 0, the *minority*, gets a small share of the
training sequences; the other N-1 chains split the rest equally. A small 4-layer Transformer with a
`latent_dim`-d bottleneck before its readout is trained to predict the next state. Because the chain
is never given, the model must infer it from the sequence and carry that belief in the bottleneck,
where N chain features compete for M < N dimensions (superposition).

Question (paper): as the minority's share grows, does its feature direction become less entangled
with the others (max |cos| falls towards the others' mean)?

World (chosen to avoid a trap an earlier prototype fell into: deterministic permutation chains let
one (previous, current) pair identify the chain, so the model learns a lookup and keeps no chain
feature):
  * one shared random cycle over the `n_states` states; from state x the walker moves 1..`max_step`
    steps along it, so every chain allows exactly the same transitions;
  * chain c prefers its own group of `n_states / n_chains` states: P(y | x, c) ∝ exp(beta·[y ∈ g_c]),
    so the chain can only be inferred from evidence accumulated over the sequence.

`design=paper` (conf/toy/paper.yaml) builds the paper's toy as secondary sources read it instead:
3 deterministic cyclic chains through 4 shared states, one feature per (chain, start state), 12 in
all, living in the 4-d residual stream itself (no bottleneck, no bypass); directions from linear
probes per (feature, current token) averaged over tokens; one fixed world; trained on the exact
expected loss until it is within `converge_tol` of the Bayes-optimal loss. There a share is the
minority chain's data as a fraction of each other chain's.

One module per concern: config (ToyConfig) -> chains (make_world, sample_sequences) -> model
(ToyTransformer) -> train (train_toy: training and measurement) -> directions (feature_directions,
probe_directions; entanglement, Welch bound, random level in detox.core.geometry) -> sweep
(run_toy_curve over shares x seeds, summarize) -> table (summary_table) and plot (plot_toy_curve). This file imports nothing, so the config is light.
"""
