# Stage `editing` (rules defined by the editing stage).
