"""Outputs of the tracker: tag names, the TensorBoard writer and matplotlib figures."""
