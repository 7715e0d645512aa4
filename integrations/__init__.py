"""Framework integrations (transformers, accelerate, lightning). The core never imports these."""
