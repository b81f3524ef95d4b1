"""Serving: photos to faces (`predictor`), face detectors (`detectors`), output files
(`outputs`), the command line over files, folders and videos (`predict`, `video`), scoring on
annotated photos (`folder_eval`), applications (`applications`), the browser demo (`app`),
the serving export (`export`) and the official checkpoint's converter (`convert_official`)."""
