"""scores: successor scores and the behavioural check (paper Section 2)."""

#: what replaces a head's output in the behavioural check (scores.behaviour; ``behaviour.ablation``)
ABLATIONS = ("mean", "zero")
