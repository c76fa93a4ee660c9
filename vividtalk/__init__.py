"""vividtalk: one-shot audio-driven talking-head generation.

Two stages (VividTalk, arXiv 2312.01841): audio -> 3-D face mesh (blendshapes, lip vertex
offsets and a head-pose codebook), then mesh -> video (projected textures, a dual-branch
motion VAE and a warping generator). See the README and DESIGN.md for the data contracts.
"""

__version__ = "0.1.0"
