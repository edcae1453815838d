"""Stage ``cycles``: circular features and each head as a map of the circle (ours; docs/DESIGN.md, "Circular features")."""
