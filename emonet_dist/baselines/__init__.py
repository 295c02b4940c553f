"""Non-neural reference systems that leave a run directory like a neural run, so ``emonet report`` can compare
them with any other run.

* :mod:`.egemaps` — eGeMAPS functionals + linear SVM per corpus (EmoNet paper, section 4.1):
  ``emonet baseline egemaps CORPUS_DIR... --out DIR``; features in :mod:`.features`, the SVM in :mod:`.svm`.
"""
