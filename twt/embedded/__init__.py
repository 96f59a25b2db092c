"""The embedded default: the mod-10 task and the tiny local models that solve it, so the whole method runs on
a CPU with no download. On ``twt.core``, ``twt.method`` and ``twt.training``."""
