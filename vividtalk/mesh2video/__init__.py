"""Stage 2 (Mesh-to-Video) conditioning, networks, losses and LightningModule."""
