"""The studies beside training: Figure 1's comparison of each approximation with the exact Fisher
block (:mod:`.fisher`), and the cost benchmark (:mod:`.bench`, its peers in :mod:`.bench_peers`,
their shared helpers in :mod:`.bench_common`)."""
