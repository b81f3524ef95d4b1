"""Evaluation with the paper's protocols: metrics (`metrics`), the alignment evaluator
(`alignment`: 68-landmark and dense NME), the Florence reconstruction protocol (`florence`),
reports (`reports`) and the entry point over a dataset (`evaluate`)."""
