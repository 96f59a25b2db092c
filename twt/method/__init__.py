"""The method: teachers and sampling, DCRS, CTS and compression, evaluation and the gate. On ``twt.core``."""
