"""The top floor: the ``twt`` command line and the demo."""
