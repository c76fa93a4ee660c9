"""vividtalk: one-shot audio-driven talking-head generation.

Two stages (VividTalk, arXiv 2312.01841): audio -> 3-D face mesh (blendshapes, lip vertex
offsets and a head-pose codebook), then mesh -> video (projected textures, a dual-branch
motion VAE and a warping generator). See the README and docs/architecture.md for the data contracts.
"""

__version__ = "0.1.0"

__all__ = ["VividTalkPipeline", "VividTalkOutput", "generate"]


def __getattr__(name: str):
    # Lazy: `import vividtalk` stays cheap; the pipeline pulls in torch, mediapipe, Lightning.
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'vividtalk' has no attribute {name!r}")
