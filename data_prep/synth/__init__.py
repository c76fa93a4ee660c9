"""Synthetic talking-head corpus with exact ground truth.

``speech``: eSpeak NG speech with phoneme timings; ``visemes``: phonemes -> coarticulated
blendshape curves; ``motion``: full per-frame face and head motion driven by the speech;
``warp``: renders the motion onto an identity photo; ``corpus``: the batch driver.
Import the submodules directly.
"""
