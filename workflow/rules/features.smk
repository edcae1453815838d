# Stage `features` (rules defined by the features stage).
