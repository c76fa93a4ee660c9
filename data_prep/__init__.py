"""Batch drivers built on :mod:`vividtalk`: ``python -m data_prep COMMAND`` (also installed as
the ``vividtalk-prep`` console script)."""
