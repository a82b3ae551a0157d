"""The offline CPU demo: AFINN lexicon as GLUE-format data, a synthetic capacity check, the demo driver.

Nothing here is imported by ``capaboost`` or the runner; the demo only *uses* them.
"""
