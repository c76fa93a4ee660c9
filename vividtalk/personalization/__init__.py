"""Few-shot personalisation (MimicTalk's static-dynamic hybrid adaptation on the warping renderer)."""
