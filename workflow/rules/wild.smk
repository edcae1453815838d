# Stage `wild` (rules defined by the wild stage).
