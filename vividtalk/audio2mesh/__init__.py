"""Stage 1 (Audio-to-Mesh) networks, LightningModules and losses."""
